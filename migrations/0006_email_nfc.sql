-- Emails are compared in one form: lowercased, then in Unicode
-- normalisation form C (gateway/src/validate.rs, email_key). Rows written
-- before were lowercased only; bring them to the same form, so a login in
-- either form finds them.
UPDATE users SET email = normalize(email, NFC) WHERE NOT (email IS NFC NORMALIZED);
