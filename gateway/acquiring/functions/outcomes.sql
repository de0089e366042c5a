-- Made from gateway/acquiring/outcomes.py (OUTCOME_CODES) by `python -m gateway.acquiring.outcomes`:
-- change the table there, then write this file again. Re-applied by `posgw db migrate` when it changes.

-- The response code of an outcome the recording functions name (NULL for a name not in the table).
CREATE OR REPLACE FUNCTION gw_response_code(p_outcome text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_outcome
        WHEN 'approved' THEN '00'
        WHEN 'format_error' THEN '30'
        WHEN 'terminal_unknown' THEN '97'
        WHEN 'merchant_mismatch' THEN '03'
        WHEN 'keys_not_current' THEN '77'
        WHEN 'mac_invalid' THEN 'A0'
        WHEN 'duplicate_different_content' THEN '94'
        WHEN 'unknown_transaction' THEN '12'
        WHEN 'currency_not_supported' THEN '12'
        WHEN 'batch_settled' THEN '12'
        WHEN 'biller_unknown' THEN '12'
        WHEN 'not_permitted' THEN '58'
        WHEN 'frozen' THEN '58'
        WHEN 'original_not_found' THEN '25'
        WHEN 'amount_mismatch' THEN '64'
        WHEN 'card_unknown' THEN '14'
        WHEN 'card_restricted' THEN '62'
        WHEN 'card_expired' THEN '54'
        WHEN 'pin_tries_exceeded' THEN '75'
        WHEN 'pin_format_error' THEN '99'
        WHEN 'pin_incorrect' THEN '55'
        WHEN 'amount_invalid' THEN '13'
        WHEN 'amount_limit' THEN '61'
        WHEN 'frequency_limit' THEN '65'
        WHEN 'suspected_fraud' THEN '59'
        WHEN 'bill_not_found' THEN '25'
        WHEN 'biller_unavailable' THEN '91'
        WHEN 'insufficient_funds' THEN '51'
        WHEN 'system_error' THEN '96'
    END
$$;
