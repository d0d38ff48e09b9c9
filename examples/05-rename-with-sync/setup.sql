CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL);
INSERT INTO users (email) SELECT 'user' || i || '@example.com' FROM generate_series(1, 5000) AS i;
