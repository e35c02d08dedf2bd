-- A password someone else saw (the first owner's, printed at first run; a
-- generated one an admin handed over) must be replaced before its session
-- can do anything but change it. Cleared by the user's own password change.
ALTER TABLE principals ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0 CHECK (must_change_password IN (0, 1));
