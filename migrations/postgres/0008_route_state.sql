-- Stateful routes: a route's state rule as the JSON of its file form ('' when
-- it has none), and the workspace's state epoch, bumped to make nodes forget
-- the workspace's state.
ALTER TABLE routes ADD COLUMN state TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN state_epoch BIGINT NOT NULL DEFAULT 0;
