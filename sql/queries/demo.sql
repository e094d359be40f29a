-- What `harvester demo` reads for its summary once the queue has drained.

-- name: count_rows_per_table
-- Exact row counts of the tables named in $1 (all in schema harvester), in that order; the names
-- are quoted as identifiers (%I), never spliced in as text.
SELECT t.name AS table_name,
       (xpath('/row/n/text()',
              query_to_xml(format('SELECT count(*) AS n FROM harvester.%I', t.name), false, true, '')
       ))[1]::text::bigint AS rows
  FROM unnest($1::text[]) WITH ORDINALITY AS t(name, position)
 ORDER BY t.position

-- name: select_sample_leads
SELECT company, domain, icp_fit_score, decision_maker
  FROM harvester.leads
 WHERE icp_fit_score IS NOT NULL
 ORDER BY icp_fit_score DESC
 LIMIT $1

-- name: select_sample_businesses
SELECT name, rating, reviews_count, categories[1] AS category
  FROM harvester.businesses
 ORDER BY reviews_count DESC NULLS LAST
 LIMIT $1

-- name: count_raw_phones
-- Phones whose raw text is what the API gave (a site phone string; a Maps phone without the API's
-- own phone_e164), and how many of them have an E.164 form now.
SELECT count(*), count(p.e164)
  FROM harvester.site_phones p JOIN harvester.results r USING (job_id)
 WHERE COALESCE(r.raw->'data'->'phones', r.raw->'data'->'contact_info'->'phones') @> to_jsonb(p.phone)
UNION ALL
SELECT count(*), count(b.phone_e164)
  FROM harvester.businesses b JOIN harvester.results r ON r.job_id = b.last_job_id
 WHERE b.phone IS NOT NULL
   AND EXISTS (SELECT 1 FROM jsonb_array_elements(r.raw->'data'->'businesses') AS item
                WHERE item->>'place_id' = b.place_id AND item->>'phone_e164' IS NULL)
