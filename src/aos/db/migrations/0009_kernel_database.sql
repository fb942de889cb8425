-- Whether each kernel runs the database it uses (the embedded PostgreSQL, whose life is that
-- kernel's). A kernel pointed at another kernel's embedded server warns about it (aos status).
ALTER TABLE kernels ADD COLUMN embedded_db boolean NOT NULL DEFAULT false;
