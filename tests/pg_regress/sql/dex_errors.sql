-- What the DEX functions say of input they cannot read: message, detail and hint as psql shows
-- them, and the SQLSTATE (psql's SQLSTATE, 00000 after a statement that succeeded: the verbose form would add the Rust source
-- line an error comes from, which moves with every edit).
\set VERBOSITY default
\set SHOW_CONTEXT never
LOAD 'dex_collector';

SELECT dex_parse('this is not DEX');
\echo :SQLSTATE
SELECT dex_parse(''::text);
\echo :SQLSTATE
SELECT dex_parse('\xff00ff'::bytea);
\echo :SQLSTATE
-- A file with a header and nothing else: no products, no error.
SELECT * FROM dex_products('DXS*1*VA*V0/6*1' || chr(10));
\echo :SQLSTATE
SELECT * FROM dex_sales('garbage', 'garbage');
\echo :SQLSTATE
-- dex_sales() names which of its two audits it could not read.
SELECT * FROM dex_sales('ST*001*0001' || chr(10), 'garbage');
\echo :SQLSTATE
-- NULL in, NULL out (the functions are strict).
SELECT dex_parse(NULL::text) IS NULL AS parse_null, dex_validate(NULL) IS NULL AS validate_null;

-- Input over dex_collector.dex_max_bytes: 54000, whichever function.
SET dex_collector.dex_max_bytes = 1024;
SELECT dex_parse(repeat('x', 2000));
\echo :SQLSTATE
SELECT dex_validate(repeat('x', 2000));
\echo :SQLSTATE
SELECT count(*) FROM dex_segments(repeat('x', 2000));
\echo :SQLSTATE
SELECT dex_validate(convert_to(repeat('x', 2000), 'UTF8'));
\echo :SQLSTATE
SELECT count(*) FROM dex_segments(convert_to(repeat('x', 2000), 'UTF8'));
\echo :SQLSTATE
SELECT count(*) FROM dex_products(repeat('x', 2000));
\echo :SQLSTATE
SELECT count(*) FROM dex_sales(repeat('x', 2000), 'x');
\echo :SQLSTATE
SET dex_collector.dex_max_bytes = 0;
\echo :SQLSTATE
RESET dex_collector.dex_max_bytes;
