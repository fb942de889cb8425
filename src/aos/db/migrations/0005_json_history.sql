-- History's body and meta as json (the text, checked), not jsonb (a parsed binary form).
--
-- Facts are written once and read back whole, in order: nothing queries inside them on a hot
-- path. jsonb paid for each fact twice: parsing it into its binary form on insert, and printing
-- it back to text on every read (`history.list` spent most of its time there). json keeps the
-- text the kernel sent, so a read is a copy; and the rows are about a quarter smaller, which is
-- also WAL. The few queries that look inside (usage totals) cast to jsonb where they need to.
ALTER TABLE history
    ALTER COLUMN body TYPE json USING body::json,
    ALTER COLUMN meta TYPE json USING meta::json;
