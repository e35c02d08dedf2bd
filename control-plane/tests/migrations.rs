//! Migrations applied to a database that already holds data, as an
//! upgrade meets it (every other test starts from an empty database): the
//! orgs migration (0021) makes the owners of the oldest org, and only
//! them, platform admins.

use std::borrow::Cow;
use std::path::PathBuf;

use sqlx::migrate::Migrator;
use uuid::Uuid;

/// The migrations of `backend` up to and including `through`, or all.
async fn migrator(backend: &str, through: Option<i64>) -> Migrator {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    let mut migrator = Migrator::new(dir).await.unwrap();
    if let Some(through) = through {
        let kept: Vec<_> = migrator
            .migrations
            .iter()
            .filter(|m| m.version <= through)
            .cloned()
            .collect();
        migrator.migrations = Cow::Owned(kept);
    }
    migrator
}

/// Orgs (oldest first) and their principals as (name, org index, role).
const ORGS: [(&str, &str); 2] = [
    ("first", "2024-01-01T00:00:00Z"),
    ("second", "2024-06-01T00:00:00Z"),
];
const PEOPLE: [(&str, usize, &str); 4] = [
    ("ann", 0, "owner"),
    ("bob", 0, "member"),
    ("cat", 1, "owner"),
    ("dan", 0, "owner"),
];
const EXPECTED: [(&str, bool); 4] = [("ann", true), ("bob", false), ("cat", false), ("dan", true)];

#[tokio::test]
async fn platform_admins_are_the_oldest_orgs_owners_after_upgrading_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    migrator("sqlite", Some(20)).await.run(&pool).await.unwrap();
    let ids: Vec<Uuid> = ORGS.iter().map(|_| Uuid::now_v7()).collect();
    // The second org's id sorts first: the oldest is told by created_at.
    let ids = [ids[1], ids[0]];
    for ((name, created), id) in ORGS.iter().zip(ids) {
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(*name)
            .bind(*created)
            .execute(&pool)
            .await
            .unwrap();
    }
    for (name, org, role) in PEOPLE {
        sqlx::query(
            "INSERT INTO principals (id, org_id, kind, name, org_role, version, created_at, updated_at) \
             VALUES ($1, $2, 'service', $3, $4, 1, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z')",
        )
        .bind(Uuid::now_v7())
        .bind(ids[org])
        .bind(name)
        .bind(role)
        .execute(&pool)
        .await
        .unwrap();
    }
    migrator("sqlite", None).await.run(&pool).await.unwrap();
    let admins: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, platform_admin FROM principals ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    let admins: Vec<(&str, bool)> = admins.iter().map(|(n, a)| (n.as_str(), *a == 1)).collect();
    assert_eq!(admins, EXPECTED);
}

#[sqlx::test(migrations = false)]
async fn platform_admins_are_the_oldest_orgs_owners_after_upgrading_postgres(pool: sqlx::PgPool) {
    migrator("postgres", Some(20))
        .await
        .run(&pool)
        .await
        .unwrap();
    // Tables force row-level security: this connection acts for the system.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SELECT set_config('mockplane.system', 'on', false)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let ids: Vec<Uuid> = ORGS.iter().map(|_| Uuid::now_v7()).collect();
    let ids = [ids[1], ids[0]];
    for ((name, created), id) in ORGS.iter().zip(ids) {
        sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3::timestamptz)")
            .bind(id)
            .bind(*name)
            .bind(*created)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    for (name, org, role) in PEOPLE {
        sqlx::query(
            "INSERT INTO principals (id, org_id, kind, name, org_role, version, created_at, updated_at) \
             VALUES ($1, $2, 'service', $3, $4, 1, now(), now())",
        )
        .bind(Uuid::now_v7())
        .bind(ids[org])
        .bind(name)
        .bind(role)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    drop(conn);
    migrator("postgres", None).await.run(&pool).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SELECT set_config('mockplane.system', 'on', false)")
        .execute(&mut *conn)
        .await
        .unwrap();
    let admins: Vec<(String, i32)> =
        sqlx::query_as("SELECT name, platform_admin FROM principals ORDER BY name")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let admins: Vec<(&str, bool)> = admins.iter().map(|(n, a)| (n.as_str(), *a == 1)).collect();
    assert_eq!(admins, EXPECTED);
}
