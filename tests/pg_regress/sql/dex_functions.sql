-- The DEX functions on the shipped sample files (crates/dex-parse/tests/fixtures, read with
-- psql's backquotes from this directory, where pg_regress runs psql).
\set VERBOSITY default
\set SHOW_CONTEXT never
\set animo `cat ../../crates/dex-parse/tests/fixtures/mkrasselt1-animo.eva_dts`
\set animo2 `cat ../../crates/dex-parse/tests/fixtures/mkrasselt1-animo2.eva_dts`
\set sielaff `cat ../../crates/dex-parse/tests/fixtures/mkrasselt1-sielaff.eva_dts`
\set mdisibio `cat ../../crates/dex-parse/tests/fixtures/mdisibio-test.dex`

-- dex_parse: the document's top-level keys, the machine and the totals.
SELECT jsonb_object_keys(dex_parse(:'animo')) AS key ORDER BY 1;
SELECT jsonb_pretty(dex_parse(:'animo') -> 'machine') AS machine;
SELECT jsonb_array_length(dex_parse(:'animo') -> 'products') AS products,
       dex_parse(:'sielaff') -> 'machine' ->> 'serial' AS sielaff_serial,
       jsonb_array_length(dex_parse(:'mdisibio') -> 'products') AS mdisibio_products;
SELECT jsonb_pretty(dex_parse(:'animo') -> 'totals') AS totals;
-- text and bytea give the same document.
SELECT dex_parse(:'animo') = dex_parse(convert_to(:'animo', 'UTF8')) AS text_equals_bytea;
-- bytea that is not UTF-8 is read as Windows-1252, as PostgreSQL's own conversion writes it, by
-- each function that takes bytea.
CREATE TEMP TABLE windows_1252 AS
SELECT convert_to(E'ST*001*0001\r\nPA1*1*100*JOE’S € – “BEST” DEAL\r\nSE*3*0001\r\n', 'WIN1252') AS raw;
SELECT p ->> 'name' AS name, d -> 'validation' -> 'warnings' ->> -1 AS last_warning
  FROM windows_1252, dex_parse(raw) AS d, jsonb_array_elements(d -> 'products') AS p;
SELECT dex_validate(raw) -> 'warnings' ->> -1 AS last_warning FROM windows_1252;
SELECT s.elements FROM windows_1252, dex_segments(raw) AS s WHERE s.segment = 'PA1';
SELECT p.name FROM windows_1252, dex_products(raw) AS p;

-- dex_validate: the checksum and what is wrong or missing.
SELECT jsonb_pretty(dex_validate(:'animo')) AS animo;
SELECT jsonb_pretty(dex_validate(:'mdisibio')) AS mdisibio;

-- dex_segments: one row per line.
SELECT line, segment, elements FROM dex_segments(:'animo') ORDER BY line LIMIT 12;
SELECT segment, count(*) FROM dex_segments(:'sielaff') GROUP BY segment ORDER BY segment;

-- dex_products: one row per selection of the first file, money exact.
SELECT * FROM dex_products(:'animo') ORDER BY selection;

-- dex_sales: what sold between two audits of one machine.
SELECT * FROM dex_sales(:'animo', :'animo2') ORDER BY selection;
