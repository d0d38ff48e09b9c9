CREATE TABLE legacy_audit (at timestamptz NOT NULL, actor text NOT NULL, action text NOT NULL);
INSERT INTO legacy_audit SELECT now() - i * interval '1 minute', 'user' || mod(i, 7), 'login'
FROM generate_series(1, 300) AS i;
