-- true once total is gone, every amount is in cents and nothing of the sync is left behind
SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'orders' AND column_name = 'total')
   AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal)
   AND (SELECT count(*) FROM orders WHERE total_cents = id * 100 + 99) = 5000;
