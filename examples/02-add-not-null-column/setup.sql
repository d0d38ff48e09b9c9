CREATE TABLE orders (id bigserial PRIMARY KEY, country text NOT NULL, amount numeric NOT NULL);
INSERT INTO orders (country, amount)
SELECT (ARRAY['US', 'GB', 'FR', 'DE'])[1 + mod(i, 4)], i FROM generate_series(1, 4000) AS i;
