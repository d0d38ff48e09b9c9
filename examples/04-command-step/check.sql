SELECT to_regclass('legacy_audit') IS NULL AND (SELECT count(*) FROM audit_log) = 300;
