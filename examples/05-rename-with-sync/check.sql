-- true once the rename is complete, no value was lost and nothing of the sync is left behind
SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'users' AND column_name = 'email')
   AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'users'::regclass AND NOT tgisinternal)
   AND NOT EXISTS (SELECT 1 FROM pg_proc WHERE left(proname, 8) = 'dm_sync_')
   AND (SELECT count(*) FROM users WHERE email_address = 'user' || id || '@example.com') = 5000;
