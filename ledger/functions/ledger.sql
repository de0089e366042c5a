-- Ledger functions: re-applied by `posgw db migrate` whenever this file changes.

-- Apply transfers (jsonb array of {debit, credit, amount, code[, reverses]})
-- to a claimed posting. Locks the accounts in id order, so concurrent
-- postings never deadlock; checks every rule before changing anything. The
-- no-overdraft rule applies to each account's net movement in the posting.
-- Returns 'ok' or the reason it posted nothing.
CREATE OR REPLACE FUNCTION ledger_apply(p_posting_id bigint, p_transfers jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_debits bigint[];
    v_credits bigint[];
    v_locked integer := 0;
    v_exceeds boolean := false;
    v_account record;
BEGIN
    IF jsonb_array_length(p_transfers) = 0 THEN
        RETURN 'transfers_must_not_be_empty';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_transfers) t WHERE (t->>'amount')::bigint <= 0) THEN
        RETURN 'amount_must_be_positive';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_transfers) t WHERE t->>'debit' = t->>'credit') THEN
        RETURN 'accounts_must_be_different';
    END IF;

    -- Net movement per account, in account id order.
    SELECT array_agg(account_id ORDER BY account_id), array_agg(debit ORDER BY account_id),
           array_agg(credit ORDER BY account_id)
      INTO v_ids, v_debits, v_credits
      FROM (SELECT account_id, sum(debit) AS debit, sum(credit) AS credit FROM (
                SELECT (t->>'debit')::bigint AS account_id, (t->>'amount')::bigint AS debit, 0::bigint AS credit
                  FROM jsonb_array_elements(p_transfers) t
                UNION ALL
                SELECT (t->>'credit')::bigint, 0, (t->>'amount')::bigint
                  FROM jsonb_array_elements(p_transfers) t) movements
             GROUP BY account_id) per_account;

    FOR v_account IN
        SELECT a.debits_posted, a.credits_posted, a.debits_must_not_exceed_credits AS guarded,
               m.debit, m.credit
          FROM ledger_accounts a
          JOIN unnest(v_ids, v_debits, v_credits) AS m (account_id, debit, credit) ON m.account_id = a.id
         ORDER BY a.id
           FOR UPDATE OF a
    LOOP
        v_locked := v_locked + 1;
        v_exceeds := v_exceeds OR (v_account.guarded
            AND v_account.debits_posted + v_account.debit > v_account.credits_posted + v_account.credit);
    END LOOP;
    IF v_locked <> cardinality(v_ids) THEN
        RETURN 'account_not_found';
    END IF;
    IF v_exceeds THEN
        RETURN 'exceeds_credits';
    END IF;

    UPDATE ledger_accounts a
       SET debits_posted = a.debits_posted + m.debit, credits_posted = a.credits_posted + m.credit
      FROM unnest(v_ids, v_debits, v_credits) AS m (account_id, debit, credit)
     WHERE a.id = m.account_id;
    INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code,
                                  reverses_transfer_id)
    SELECT p_posting_id, (t->>'debit')::bigint, (t->>'credit')::bigint, (t->>'amount')::bigint,
           t->>'code', (t->>'reverses')::bigint
      FROM jsonb_array_elements(p_transfers) t;
    RETURN 'ok';
END $$;

-- Claim an idempotency key. Returns the new posting id, or NULL with the
-- earlier posting's result in p_result ('exists' for an identical success).
CREATE OR REPLACE FUNCTION ledger_claim(p_key text, p_md5 text, OUT p_posting_id bigint, OUT p_result text)
LANGUAGE plpgsql AS $$
DECLARE
    v_existing record;
BEGIN
    INSERT INTO ledger_postings (idempotency_key, content_md5, result)
    VALUES (p_key, p_md5, 'pending')
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO p_posting_id;
    IF p_posting_id IS NOT NULL THEN
        RETURN;
    END IF;
    SELECT content_md5, result INTO v_existing FROM ledger_postings WHERE idempotency_key = p_key;
    IF v_existing.content_md5 <> p_md5 THEN
        p_result := 'exists_with_different_content';
    ELSIF v_existing.result = 'ok' THEN
        p_result := 'exists';
    ELSE
        p_result := v_existing.result;
    END IF;
END $$;

-- Post a set of transfers atomically under an idempotency key.
CREATE OR REPLACE FUNCTION ledger_post(p_key text, p_transfers jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_claim record;
    v_result text;
BEGIN
    v_claim := ledger_claim(p_key, md5(p_transfers::text));
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    v_result := ledger_apply(v_claim.p_posting_id, p_transfers);
    UPDATE ledger_postings SET result = v_result WHERE id = v_claim.p_posting_id;
    RETURN v_result;
END $$;

-- Reverse every transfer of the posting under p_original_key with
-- compensating transfers, under the idempotency key p_key. A posting is
-- reversed at most once ('already_reversed'); reversing one that does not
-- exist or did not post gives 'linked_transfer_not_found'.
CREATE OR REPLACE FUNCTION ledger_reverse(p_key text, p_original_key text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_claim record;
    v_original record;
    v_result text;
BEGIN
    v_claim := ledger_claim(p_key, md5('reverse:' || p_original_key));
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    -- Lock the original: concurrent reversals of it queue here.
    SELECT id, result INTO v_original FROM ledger_postings
     WHERE idempotency_key = p_original_key FOR UPDATE;
    IF NOT FOUND OR v_original.result <> 'ok' THEN
        v_result := 'linked_transfer_not_found';
    ELSIF EXISTS (SELECT 1 FROM ledger_postings
                   WHERE reverses_posting_id = v_original.id AND result = 'ok') THEN
        v_result := 'already_reversed';
    ELSE
        v_result := ledger_apply(v_claim.p_posting_id, (
            SELECT jsonb_agg(jsonb_build_object(
                       'debit', credit_account_id, 'credit', debit_account_id, 'amount', amount,
                       'code', 'reversal:' || code, 'reverses', id) ORDER BY id)
              FROM ledger_transfers WHERE posting_id = v_original.id));
    END IF;
    UPDATE ledger_postings
       SET result = v_result,
           reverses_posting_id = CASE WHEN v_result = 'ok' THEN v_original.id END
     WHERE id = v_claim.p_posting_id;
    RETURN v_result;
END $$;
