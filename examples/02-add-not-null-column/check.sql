SELECT (SELECT is_nullable FROM information_schema.columns
        WHERE table_name = 'orders' AND column_name = 'currency') = 'NO'
   AND (SELECT count(*) FROM orders WHERE country = 'US' AND currency = 'USD') = 1000
   AND (SELECT count(*) FROM orders WHERE country = 'GB' AND currency = 'GBP') = 1000
   AND (SELECT count(*) FROM orders WHERE currency = 'EUR') = 2000;
