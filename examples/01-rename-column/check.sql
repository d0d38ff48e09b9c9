-- true once the rename is complete and no value was lost
SELECT NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'users' AND column_name = 'email')
   AND (SELECT count(*) FROM users WHERE email_address = 'user' || id || '@example.com') = 5000;
