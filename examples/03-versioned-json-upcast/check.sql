SELECT (SELECT count(*) FROM profiles WHERE (doc->>'version')::int = 2) = 3100
   AND (SELECT count(*) FROM profiles
        WHERE doc->>'first_name' = 'First' || id AND doc->>'last_name' = 'Last Name' || id) = 3000
   AND EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'profiles_doc_is_v2');
