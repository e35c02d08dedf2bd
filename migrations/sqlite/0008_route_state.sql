-- Stateful routes; see migrations/postgres/0008_route_state.sql.
ALTER TABLE routes ADD COLUMN state TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN state_epoch INTEGER NOT NULL DEFAULT 0;
