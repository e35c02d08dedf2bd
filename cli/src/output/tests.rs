use mockplane_shared::model::realism::Chaos;
use serde_json::json;

use super::*;

#[test]
fn tables_align_and_clip() {
    let rows = vec![
        json!({"slug": "demo", "name": "Demo", "routes": 3}),
        json!({"slug": "a-much-longer-slug", "name": "x\ny", "routes": 12}),
    ];
    let text = table(&rows, &["slug", "name", "routes"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "SLUG                NAME  ROUTES");
    assert_eq!(lines[1], "demo                Demo  3");
    assert_eq!(lines[2], "a-much-longer-slug  x y   12");
    let flags = vec![
        json!({"name": "dev", "chain": 1, "active": true}),
        json!({"name": "sandbox", "chain": null, "active": false}),
    ];
    let text = table(&flags, &["name", "chain", "active"]);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "NAME     CHAIN  ACTIVE",
            "dev      1      yes",
            "sandbox  -"
        ]
    );
    let lists = vec![json!({"tags": ["payments", "[Reality]"], "headers": [["a", "1"]]})];
    assert_eq!(
        table(&lists, &["tags", "headers"]).lines().nth(1).unwrap(),
        r#"payments, [Reality]  [["a","1"]]"#
    );
    let long = vec![json!({"path": "/".repeat(100)})];
    assert!(
        table(&long, &["path"])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with('…')
    );
}

#[test]
fn realism_in_short() {
    use mockplane_shared::model::environment::reality_level;
    let summary = |level| {
        let realism = reality_level(level);
        (
            realism.latency.as_ref().map(latency_summary),
            realism.chaos.as_ref().map(chaos_summary),
        )
    };
    assert_eq!(summary(1), (None, None));
    assert_eq!(summary(2), (Some("uniform 10-50ms".into()), None));
    assert_eq!(
        summary(3),
        (Some("normal 80±25ms".into()), Some("1% 500,503".into()))
    );
    assert_eq!(
        summary(5).1.as_deref(),
        Some("5% 429,500,502,503,504,reset,truncated")
    );
    let chaos = Chaos {
        rate: 0.075,
        ..Default::default()
    };
    assert_eq!(chaos_summary(&chaos), "7.5% 500");
}

#[test]
fn limits_read_short() {
    use mockplane_shared::model::environment::Limits;
    let limits = |rate, burst, max| Limits {
        requests_per_second: rate,
        burst,
        max_concurrent: max,
    };
    assert_eq!(limits_summary(&limits(None, None, None)), "none");
    assert_eq!(limits_summary(&limits(Some(100), None, None)), "100/s");
    assert_eq!(limits_summary(&limits(Some(100), Some(100), None)), "100/s");
    assert_eq!(
        limits_summary(&limits(Some(100), Some(200), Some(50))),
        "100/s burst 200, 50 at once"
    );
    assert_eq!(limits_summary(&limits(None, None, Some(3))), "3 at once");
}
