"""The statements of the SQL-native file path that `python -m bench.spike` times (a spike, not product code).

Named parameters are psycopg2's `%(name)s`. Per chunk, one session runs them
in one transaction: the chunk's parsed rows live in TEMP tables that empty at
commit, so two workers never see each other's rows and nothing is WAL-logged.
"""
from __future__ import annotations

# The spike's own tables, beside the migrated schema. raw_chunks is the raw layer: the bytes as received.
SETUP = (
    """CREATE TABLE raw_chunks (
        id bigserial PRIMARY KEY, source varchar(100) NOT NULL, batch_no int NOT NULL, first_line int NOT NULL,
        byte_start bigint NOT NULL, byte_end bigint NOT NULL, sha256 bytea NOT NULL,
        data bytea COMPRESSION lz4 NOT NULL, UNIQUE (source, sha256))""",
    # Rejects keyed by where the row is in the raw layer: /rejects would re-read the line from its chunk.
    """CREATE TABLE chunk_rejects (
        chunk_id bigint NOT NULL, line int NOT NULL, source varchar(100) NOT NULL, run_id bigint NOT NULL,
        reason jsonb NOT NULL, PRIMARY KEY (chunk_id, line))""",
    # market_quotes with lineage as (chunk_id, line) and no foreign key to a per-row raw record.
    "CREATE TABLE quotes_by_chunk (LIKE market_quotes INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    """ALTER TABLE quotes_by_chunk DROP COLUMN raw_record_id, ADD COLUMN chunk_id bigint NOT NULL,
        ADD COLUMN line int NOT NULL, ADD FOREIGN KEY (asset_id) REFERENCES assets(id)""",
    # For comparison: the same without the foreign key to assets, and with the conflict key as its only index.
    "CREATE TABLE quotes_no_fk (LIKE quotes_by_chunk INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    "CREATE TABLE quotes_key_only (LIKE quotes_by_chunk INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
    "ALTER TABLE quotes_key_only ADD UNIQUE (source, asset_id, observed_at)",
    "CREATE TABLE quotes_split (LIKE quotes_by_chunk INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
    "ALTER TABLE quotes_split ADD FOREIGN KEY (asset_id) REFERENCES assets(id)",
    "CREATE TABLE seen_md5 (source varchar(100) NOT NULL, hash uuid NOT NULL, PRIMARY KEY (source, hash))",
    "CREATE TABLE seen_sha256 (source varchar(100) NOT NULL, hash bytea NOT NULL, PRIMARY KEY (source, hash))",
    # The current shape's raw batches need no run: only their own key is looked up (as in bench/indexes.py).
    "ALTER TABLE raw_batches DROP CONSTRAINT fk_raw_batches_run_source_id_run_sources",
)

# Per session: the parse target. A TEMP sequence numbers the rows as COPY reads them (defaults are
# evaluated row by row in input order), reset to the chunk's first line before each COPY.
SESSION = (
    "CREATE TEMP SEQUENCE stage_line",
    """CREATE TEMP TABLE stage_rows (
        line int NOT NULL DEFAULT nextval('stage_line'), currency text, date text, open text, high text,
        low text, close text, volume text, market_cap text) ON COMMIT DELETE ROWS""",
    """CREATE TEMP TABLE typed_rows (
        line int NOT NULL, source_asset_id text NOT NULL, observed_at timestamptz NOT NULL,
        price_usd numeric NOT NULL, market_cap_usd numeric, volume_24h_usd numeric) ON COMMIT DELETE ROWS""",
    "CREATE TEMP TABLE cast_only (LIKE typed_rows) ON COMMIT DELETE ROWS",
    "SET synchronous_commit = off",  # as extract and load commit today (kasparro/pipeline/durability.py)
)
STAGE_COLUMNS = "currency, date, open, high, low, close, volume, market_cap"

# What each pass empties first (market_quotes and the raw tables are truncated by the caller).
_SPIKE_TABLES = ("raw_chunks, chunk_rejects, quotes_by_chunk, quotes_no_fk, quotes_key_only, quotes_split,"
                 " seen_md5, seen_sha256, checkpoints")
RESET = (
    f"TRUNCATE {_SPIKE_TABLES}",
    "DELETE FROM asset_aliases",
    "DELETE FROM assets",
)

INSERT_CHUNK = """
    INSERT INTO raw_chunks (source, batch_no, first_line, byte_start, byte_end, sha256, data)
    VALUES (%(source)s, %(batch_no)s, %(first_line)s, %(byte_start)s, %(byte_end)s, %(sha256)s, %(data)s)
    ON CONFLICT (source, sha256) DO NOTHING RETURNING id"""
RESET_LINES = "SELECT setval('stage_line', %(first_line)s, false)"
COPY_CHUNK = "COPY stage_rows ({columns}) FROM STDIN (FORMAT csv{header})"

# The rules of kasparro/pipeline/validation.py for this file's mapping (currency -> source_asset_id,
# date '%Y-%m-%d' -> observed_at, close -> price_usd, market_cap, volume), as expressions that cannot
# raise: a regular expression guards every cast, and a date's day is checked against its month
# before `::date` sees it. Cells are stripped and '' is missing, as CsvFile.to_unified does.
# OFFSET 0 keeps each level from being flattened into the next: without it every reference to a
# cast value repeats its regular expression and cast (4x slower).
_NUMBER = r"'^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,4})?$'"
_DAY = r"'^[1-9][0-9]{3}-(0?[1-9]|1[0-2])-(0?[1-9]|[12][0-9]|3[01])$'"
_FIELDS = f"""
    SELECT line, sid, observed_at, price_usd, cap, vol,
           (sid IS NULL OR length(sid) > 200) AS bad_sid,
           (observed_at IS NULL OR observed_at < '2009-01-03 00:00+00' OR observed_at > now() + interval '1 day')
               AS bad_time,
           (price_usd IS NULL OR price_usd < 0 OR price_usd > 1e12) AS bad_price,
           (cap_text IS NOT NULL AND (cap IS NULL OR cap < 0 OR cap > 1e16)) AS bad_cap,
           (vol_text IS NOT NULL AND (vol IS NULL OR vol < 0 OR vol > 1e16)) AS bad_vol,
           day_text, price_text
    FROM (
        SELECT line, sid, day_text, price_text, cap_text, vol_text,
               CASE WHEN day_text ~ {_DAY} AND (split_part(day_text, '-', 3)::int <= 28
                         OR split_part(day_text, '-', 3)::int <= extract(day FROM
                            make_date(split_part(day_text, '-', 1)::int, split_part(day_text, '-', 2)::int, 1)
                            + interval '1 month - 1 day'))
                    THEN day_text::date::timestamp AT TIME ZONE 'UTC' END AS observed_at,
               CASE WHEN price_text ~ {_NUMBER} THEN price_text::numeric END AS price_usd,
               CASE WHEN cap_text ~ {_NUMBER} THEN cap_text::numeric END AS cap,
               CASE WHEN vol_text ~ {_NUMBER} THEN vol_text::numeric END AS vol
        FROM (SELECT line, nullif(btrim(currency), '') AS sid, nullif(btrim(date), '') AS day_text,
                     nullif(btrim(close), '') AS price_text, nullif(btrim(market_cap), '') AS cap_text,
                     nullif(btrim(volume), '') AS vol_text
              FROM stage_rows OFFSET 0) AS cells
        OFFSET 0
    ) AS typed"""
# One reason object per rejected row, worded like marshmallow's messages.
_REASON = """jsonb_strip_nulls(jsonb_build_object(
        'source_asset_id', CASE WHEN sid IS NULL THEN '["Missing data for required field."]'::jsonb
                                WHEN bad_sid THEN '["Longer than maximum length 200."]' END,
        'observed_at', CASE WHEN day_text IS NULL THEN '["Missing data for required field."]'::jsonb
                            WHEN observed_at IS NULL THEN to_jsonb(ARRAY['not a date in %%Y-%%m-%%d: ' || day_text])
                            WHEN bad_time THEN '["observation time is outside the plausible range"]' END,
        'price_usd', CASE WHEN price_text IS NULL THEN '["Missing data for required field."]'::jsonb
                          WHEN price_usd IS NULL THEN '["Not a valid number."]'
                          WHEN bad_price THEN '["Must be between 0 and 1000000000000."]' END,
        'market_cap_usd', CASE WHEN bad_cap THEN '["Not a valid number between 0 and 1e16."]'::jsonb END,
        'volume_24h_usd', CASE WHEN bad_vol THEN '["Not a valid number between 0 and 1e16."]'::jsonb END))"""
VALIDATE = f"""
    WITH checked AS MATERIALIZED ({_FIELDS}),
    rejected AS (
        INSERT INTO chunk_rejects (chunk_id, line, source, run_id, reason)
        SELECT %(chunk_id)s, line, %(source)s, %(run_id)s, {_REASON}
        FROM checked WHERE bad_sid OR bad_time OR bad_price OR bad_cap OR bad_vol
        RETURNING 1
    ), typed AS (
        INSERT INTO typed_rows (line, source_asset_id, observed_at, price_usd, market_cap_usd, volume_24h_usd)
        SELECT line, sid, observed_at, price_usd, cap, vol
        FROM checked WHERE NOT (bad_sid OR bad_time OR bad_price OR bad_cap OR bad_vol)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM typed), (SELECT count(*) FROM rejected)"""
# The fast path, tried first under a savepoint: plain casts and range checks, and only rows whose date
# has the canonical YYYY-MM-DD shape. It decides a chunk only if it kept every row; if it kept fewer,
# or a cast raised, the chunk goes through VALIDATE, which words each reject (as load_quote falls back
# to marshmallow). NaN sorts above every number, so the upper bounds reject it too.
VALIDATE_FAST = """
    INSERT INTO typed_rows (line, source_asset_id, observed_at, price_usd, market_cap_usd, volume_24h_usd)
    SELECT line, sid, observed_at, price_usd, cap, vol
    FROM (SELECT line, btrim(currency) AS sid, btrim(date) AS day_text,
                 btrim(date)::date::timestamp AT TIME ZONE 'UTC' AS observed_at,
                 nullif(btrim(close), '')::numeric AS price_usd, nullif(btrim(market_cap), '')::numeric AS cap,
                 nullif(btrim(volume), '')::numeric AS vol
          FROM stage_rows OFFSET 0) AS cast_cells
    WHERE length(day_text) = 10 AND substr(day_text, 5, 1) = '-' AND substr(day_text, 8, 1) = '-'
      AND sid <> '' AND length(sid) <= 200
      AND observed_at >= '2009-01-03 00:00+00' AND observed_at <= now() + interval '1 day'
      AND price_usd >= 0 AND price_usd <= 1e12
      AND (cap IS NULL OR (cap >= 0 AND cap <= 1e16)) AND (vol IS NULL OR (vol >= 0 AND vol <= 1e16))"""
# For comparison only: the casts with no checks and no reasons (what validation adds on top of typing).
CAST_ONLY = """
    INSERT INTO cast_only (line, source_asset_id, observed_at, price_usd, market_cap_usd, volume_24h_usd)
    SELECT line, btrim(currency), date::date::timestamp AT TIME ZONE 'UTC', close::numeric,
           market_cap::numeric, volume::numeric
    FROM stage_rows"""

# A repeated line is counted once: its content (the parsed cells, as the product hashes the parsed payload)
# goes into a per-source set; what was already there is a duplicate.
_ROW = "ROW(currency, date, open, high, low, close, volume, market_cap)::text"
HASH_ONLY = f"SELECT count(md5({_ROW})) FROM stage_rows"
DEDUP_IN_CHUNK = f"SELECT count(*) - count(DISTINCT md5({_ROW})) FROM stage_rows"
DEDUP_MD5 = f"""INSERT INTO seen_md5 (source, hash) SELECT %(source)s, md5({_ROW})::uuid FROM stage_rows
    ON CONFLICT DO NOTHING"""
DEDUP_SHA256 = f"""INSERT INTO seen_sha256 (source, hash)
    SELECT %(source)s, sha256(convert_to({_ROW}, 'UTF8')) FROM stage_rows ON CONFLICT DO NOTHING"""

# Identity for the spike: an alias we have, else a new asset (slug = source id) and alias, in one statement.
# The product's rules (overrides, implied slugs, name matches) are in kasparro/pipeline/identity.py.
IDENTITY = """
    WITH ids AS (SELECT DISTINCT source_asset_id FROM typed_rows),
    missing AS (
        SELECT i.source_asset_id FROM ids i
        LEFT JOIN asset_aliases a ON a.source = %(source)s AND a.source_asset_id = i.source_asset_id
        WHERE a.id IS NULL
    ), created AS (
        INSERT INTO assets (slug) SELECT source_asset_id FROM missing ORDER BY 1
        ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug
        RETURNING id, slug
    )
    INSERT INTO asset_aliases (source, source_asset_id, asset_id, match_method)
    SELECT %(source)s, slug, id, 'new' FROM created ON CONFLICT (source, source_asset_id) DO NOTHING"""
JOIN_ONLY = """SELECT count(a.asset_id) FROM typed_rows t
    JOIN asset_aliases a ON a.source = %(source)s AND a.source_asset_id = t.source_asset_id"""

# As kasparro/pipeline/targets/quotes.py: DISTINCT ON because ON CONFLICT may touch a row once per
# statement (the last line of a key wins); the WHERE keeps an identical re-load from rewriting rows.
_UPSERT = """
    WITH staged AS (
        SELECT DISTINCT ON (a.asset_id, t.observed_at) a.asset_id, t.*{extra_select}
        FROM typed_rows t
        JOIN asset_aliases a ON a.source = %(source)s AND a.source_asset_id = t.source_asset_id{extra_join}
        ORDER BY a.asset_id, t.observed_at, t.line DESC
    ), written AS (
        INSERT INTO {table} AS q (asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd,
                                  run_id, {lineage})
        SELECT asset_id, %(source)s, observed_at, price_usd, market_cap_usd, volume_24h_usd, %(run_id)s,
               {lineage_values}
        FROM staged
        ON CONFLICT (source, asset_id, observed_at) DO UPDATE SET
            price_usd = EXCLUDED.price_usd, market_cap_usd = EXCLUDED.market_cap_usd,
            volume_24h_usd = EXCLUDED.volume_24h_usd, run_id = EXCLUDED.run_id, updated_at = now(),
            {lineage_update}
        WHERE (q.price_usd, q.market_cap_usd, q.volume_24h_usd)
              IS DISTINCT FROM (EXCLUDED.price_usd, EXCLUDED.market_cap_usd, EXCLUDED.volume_24h_usd)
        RETURNING (xmax = 0) AS inserted
    )
    SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"""
UPSERT_BY_CHUNK = _UPSERT.format(
    table="quotes_by_chunk", extra_select="", extra_join="", lineage="chunk_id, line",
    lineage_values="%(chunk_id)s, line", lineage_update="chunk_id = EXCLUDED.chunk_id, line = EXCLUDED.line")
UPSERT_NO_FK = UPSERT_BY_CHUNK.replace("INTO quotes_by_chunk", "INTO quotes_no_fk")
UPSERT_KEY_ONLY = UPSERT_BY_CHUNK.replace("INTO quotes_by_chunk", "INTO quotes_key_only")
# For comparison: no speculative insertion. Changed rows are updated, then keys not there are inserted
# plainly; safe only while one writer holds the source's lease (the key includes the source).
_STAGED = _UPSERT.split("), written AS")[0] + ")"
UPDATE_THEN_INSERT = _STAGED.format(extra_select="", extra_join="") + """,
    changed AS (
        UPDATE quotes_split q SET price_usd = s.price_usd, market_cap_usd = s.market_cap_usd,
            volume_24h_usd = s.volume_24h_usd, run_id = %(run_id)s, updated_at = now(),
            chunk_id = %(chunk_id)s, line = s.line
        FROM staged s
        WHERE q.source = %(source)s AND q.asset_id = s.asset_id AND q.observed_at = s.observed_at
          AND (q.price_usd, q.market_cap_usd, q.volume_24h_usd)
              IS DISTINCT FROM (s.price_usd, s.market_cap_usd, s.volume_24h_usd)
        RETURNING 1
    ), added AS (
        INSERT INTO quotes_split (asset_id, source, observed_at, price_usd, market_cap_usd, volume_24h_usd, run_id,
                                  chunk_id, line)
        SELECT asset_id, %(source)s, observed_at, price_usd, market_cap_usd, volume_24h_usd, %(run_id)s,
               %(chunk_id)s, line
        FROM staged s
        WHERE NOT EXISTS (SELECT 1 FROM quotes_split q
                          WHERE q.source = %(source)s AND q.asset_id = s.asset_id AND q.observed_at = s.observed_at)
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM changed)"""
CHECKPOINT = """
    INSERT INTO checkpoints (source, cursor, run_id, batch_id, updated_at)
    VALUES (%(source)s, %(cursor)s::jsonb, %(run_id)s, %(chunk_id)s, now())
    ON CONFLICT (source) DO UPDATE SET cursor = EXCLUDED.cursor, run_id = EXCLUDED.run_id,
        batch_id = EXCLUDED.batch_id, updated_at = now()"""

# The current shape, done set-based: a raw batch, one JSONB raw record per line (sha256 hex, unique per
# source), and market_quotes as migrated, with its foreign key to each row's raw record.
RAW_BATCH = """
    INSERT INTO raw_batches (run_source_id, source, seq, state, cursor_after, received, new_records)
    VALUES (1, %(source)s, %(batch_no)s, 'extracted', %(cursor)s::jsonb, 0, 0) RETURNING id"""
RAW_RECORDS = f"""
    INSERT INTO raw_records (source, run_id, batch_id, position, payload, content_hash)
    SELECT %(source)s, %(run_id)s, %(batch_id)s, 'bench.csv:' || line,
           jsonb_build_object('currency', currency, 'date', date, 'open', open, 'high', high, 'low', low,
                              'close', close, 'volume', volume, 'market_cap', market_cap),
           encode(sha256(convert_to({_ROW}, 'UTF8')), 'hex')
    FROM stage_rows ON CONFLICT (source, content_hash) DO NOTHING"""
UPSERT_CURRENT = _UPSERT.format(
    table="market_quotes", extra_select=", r.id AS raw_record_id",
    extra_join=" JOIN raw_records r ON r.batch_id = %(batch_id)s AND r.position = 'bench.csv:' || t.line",
    lineage="raw_record_id", lineage_values="raw_record_id", lineage_update="raw_record_id = EXCLUDED.raw_record_id")
