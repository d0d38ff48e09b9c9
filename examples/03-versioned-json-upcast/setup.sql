CREATE TABLE profiles (id bigserial PRIMARY KEY, doc jsonb NOT NULL);
INSERT INTO profiles (doc)
SELECT jsonb_build_object('version', 1, 'name', 'First' || i || ' Last Name' || i)
FROM generate_series(1, 3000) AS i;
INSERT INTO profiles (doc)
SELECT jsonb_build_object('version', 2, 'first_name', 'New' || i, 'last_name', 'Person')
FROM generate_series(1, 100) AS i;
