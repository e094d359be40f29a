-- The rows a stored body writes: the results row and its normalized child rows (the job's final state
-- is jobs.sql's finish_job).
-- Every write is set-based (unnest over parallel arrays), so one statement serves any batch size.
-- jsonb values travel as text and are cast here.

-- name: upsert_results
-- $11: true when the body was just fetched, false when rebuilt from raw. fetched_at moves only
-- when a fetch brings a different body: storing the same result again leaves the row as it was.
-- $12: each body's rows_digest; a different body or digest is a 'restored' change (011_changes).
INSERT INTO harvester.results AS r
       (job_id, job_type, status, success, processing_time_seconds, worker_id, completed_at,
        message, error_message, raw, fetched_at, rows_digest)
SELECT t.job_id, t.job_type, t.status, t.success, t.seconds, t.worker_id, t.completed_at,
       t.message, t.error_message, t.raw::jsonb, now(), t.rows_digest
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[], $5::float8[], $6::text[],
              $7::timestamptz[], $8::text[], $9::text[], $10::text[], $12::text[])
       AS t(job_id, job_type, status, success, seconds, worker_id, completed_at, message,
            error_message, raw, rows_digest)
ON CONFLICT (job_id) DO UPDATE
   SET job_type = EXCLUDED.job_type,
       status = EXCLUDED.status,
       success = EXCLUDED.success,
       processing_time_seconds = EXCLUDED.processing_time_seconds,
       worker_id = EXCLUDED.worker_id,
       completed_at = EXCLUDED.completed_at,
       message = EXCLUDED.message,
       error_message = EXCLUDED.error_message,
       raw = EXCLUDED.raw,
       rows_digest = EXCLUDED.rows_digest,
       fetched_at = CASE WHEN $11::boolean AND r.raw IS DISTINCT FROM EXCLUDED.raw
                         THEN EXCLUDED.fetched_at ELSE r.fetched_at END

-- name: delete_sites
-- Child rows (emails, phones, addresses, socials, team) go with the site by ON DELETE CASCADE.
DELETE FROM harvester.sites WHERE job_id = ANY($1::uuid[])

-- name: delete_maps_searches
-- maps_businesses go with the search by ON DELETE CASCADE; businesses themselves stay.
DELETE FROM harvester.maps_searches WHERE job_id = ANY($1::uuid[])

-- name: insert_sites
INSERT INTO harvester.sites
       (job_id, url, domain, pages_crawled, crawl_status, markdown_compendium, compendium,
        company_vitals, company_name, industry, pain_points, lead_scoring, icp_fit_score,
        personalization_hooks, metadata, logo, custom_analysis, completed_at)
SELECT t.job_id, t.url, t.domain, t.pages_crawled, t.crawl_status, t.markdown_compendium,
       t.compendium::jsonb, t.company_vitals::jsonb, t.company_name, t.industry,
       t.pain_points::jsonb, t.lead_scoring::jsonb, t.icp_fit_score,
       t.personalization_hooks::jsonb, t.metadata::jsonb, t.logo::jsonb,
       t.custom_analysis::jsonb, t.completed_at
  FROM unnest($1::uuid[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[],
              $13::float8[], $14::text[], $15::text[], $16::text[], $17::text[],
              $18::timestamptz[])
       AS t(job_id, url, domain, pages_crawled, crawl_status, markdown_compendium, compendium,
            company_vitals, company_name, industry, pain_points, lead_scoring, icp_fit_score,
            personalization_hooks, metadata, logo, custom_analysis, completed_at)

-- name: insert_site_emails
INSERT INTO harvester.site_emails (job_id, email)
SELECT * FROM unnest($1::uuid[], $2::text[])

-- name: insert_site_phones
INSERT INTO harvester.site_phones (job_id, phone, e164, national, country_code, phone_type, valid)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::boolean[])

-- name: insert_site_addresses
INSERT INTO harvester.site_addresses (job_id, address)
SELECT * FROM unnest($1::uuid[], $2::text[])

-- name: insert_site_socials
INSERT INTO harvester.site_socials (job_id, platform, url)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])

-- name: insert_team_members
INSERT INTO harvester.team_members (job_id, position, name, title, email, linkedin)
SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[], $4::text[], $5::text[], $6::text[])

-- name: insert_maps_searches
INSERT INTO harvester.maps_searches (job_id, query, results_count, metadata)
SELECT t.job_id, t.query, t.results_count, t.metadata::jsonb
  FROM unnest($1::uuid[], $2::text[], $3::integer[], $4::text[])
       AS t(job_id, query, results_count, metadata)

-- name: upsert_businesses
-- One row per place across all searches: first_seen_at is kept; details, last_seen_at and
-- last_job_id follow the most recently completed search (an older one re-stored changes nothing,
-- and neither does the same search stored again: last_seen_at is when that search was first seen).
-- Sorted by place_id so concurrent stores lock rows in the same order and cannot deadlock.
INSERT INTO harvester.businesses AS b
       (place_id, name, rating, reviews_count, address, phone, phone_e164, website, categories,
        latitude, longitude, link, business_status, price_range, working_hours, image_url,
        first_seen_at, last_seen_at, last_job_id, last_completed_at)
SELECT t.place_id, t.name, t.rating, t.reviews_count, t.address, t.phone, t.phone_e164,
       t.website, ARRAY(SELECT jsonb_array_elements_text(t.categories::jsonb)),
       t.latitude, t.longitude, t.link, t.business_status, t.price_range,
       t.working_hours::jsonb, t.image_url, now(), now(), t.job_id, t.completed_at
  FROM unnest($1::text[], $2::text[], $3::float8[], $4::integer[], $5::text[], $6::text[],
              $7::text[], $8::text[], $9::text[], $10::float8[], $11::float8[], $12::text[],
              $13::text[], $14::text[], $15::text[], $16::text[], $17::uuid[],
              $18::timestamptz[])
       AS t(place_id, name, rating, reviews_count, address, phone, phone_e164, website,
            categories, latitude, longitude, link, business_status, price_range, working_hours,
            image_url, job_id, completed_at)
 ORDER BY t.place_id
ON CONFLICT (place_id) DO UPDATE
   SET name = EXCLUDED.name,
       rating = EXCLUDED.rating,
       reviews_count = EXCLUDED.reviews_count,
       address = EXCLUDED.address,
       phone = EXCLUDED.phone,
       phone_e164 = EXCLUDED.phone_e164,
       website = EXCLUDED.website,
       categories = EXCLUDED.categories,
       latitude = EXCLUDED.latitude,
       longitude = EXCLUDED.longitude,
       link = EXCLUDED.link,
       business_status = EXCLUDED.business_status,
       price_range = EXCLUDED.price_range,
       working_hours = EXCLUDED.working_hours,
       image_url = EXCLUDED.image_url,
       last_seen_at = CASE WHEN b.last_job_id = EXCLUDED.last_job_id THEN b.last_seen_at
                           ELSE EXCLUDED.last_seen_at END,
       last_job_id = EXCLUDED.last_job_id,
       last_completed_at = EXCLUDED.last_completed_at
 WHERE b.last_completed_at IS NULL
    OR EXCLUDED.last_completed_at IS NULL
    OR EXCLUDED.last_completed_at > b.last_completed_at
    -- the same search normalized anew (reprocess after a normalizer change, such as phone_e164
    -- filled from a raw phone): its details replace the old ones; an identical re-store writes nothing
    OR (b.last_job_id = EXCLUDED.last_job_id
        AND (b.name, b.rating, b.reviews_count, b.address, b.phone, b.phone_e164, b.website,
             b.categories, b.latitude, b.longitude, b.link, b.business_status, b.price_range,
             b.working_hours, b.image_url)
            IS DISTINCT FROM
            (EXCLUDED.name, EXCLUDED.rating, EXCLUDED.reviews_count, EXCLUDED.address,
             EXCLUDED.phone, EXCLUDED.phone_e164, EXCLUDED.website, EXCLUDED.categories,
             EXCLUDED.latitude, EXCLUDED.longitude, EXCLUDED.link, EXCLUDED.business_status,
             EXCLUDED.price_range, EXCLUDED.working_hours, EXCLUDED.image_url))
    -- Completion times have whole seconds: on a tie the larger job id wins, so the row does not
    -- depend on the order in which the searches happened to be stored.
    OR (EXCLUDED.last_completed_at = b.last_completed_at AND EXCLUDED.last_job_id >= b.last_job_id)

-- name: insert_maps_businesses
INSERT INTO harvester.maps_businesses (job_id, position, place_id)
SELECT * FROM unnest($1::uuid[], $2::integer[], $3::text[])
