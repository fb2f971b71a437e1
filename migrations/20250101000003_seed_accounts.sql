-- A data migration: a plain INSERT, which would fail on the unique email if
-- it ever ran twice. pgboot's lock makes sure it runs exactly once.
INSERT INTO accounts (email) VALUES ('ada@example.org'), ('grace@example.org');
