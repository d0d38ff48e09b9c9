CREATE TABLE orders (id bigserial PRIMARY KEY, total numeric(10, 2) NOT NULL);
INSERT INTO orders (total) SELECT i + 0.99 FROM generate_series(1, 5000) AS i;
