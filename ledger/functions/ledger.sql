-- Ledger functions: re-applied by `posgw db migrate` whenever this file changes.

-- Apply transfers (jsonb array of {debit, credit, amount, code[, reverses]})
-- to a claimed posting. Locks the accounts in id order, so concurrent
-- postings never deadlock; checks every rule before changing anything. The
-- no-overdraft rule applies to each account's net movement in the posting.
-- Returns 'ok' or the reason it posted nothing.
CREATE OR REPLACE FUNCTION ledger_apply(p_posting_id bigint, p_transfers jsonb) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_posting record;
    v_accounts record;
BEGIN
    -- The transfers' rules, and each account's net movement in account id order.
    WITH transfers AS (
        SELECT (t->>'debit')::bigint AS debit, (t->>'credit')::bigint AS credit, (t->>'amount')::bigint AS amount
          FROM jsonb_array_elements(p_transfers) t),
    movements AS (
        SELECT account_id, sum(debit) AS debit, sum(credit) AS credit FROM (
            SELECT debit AS account_id, amount AS debit, 0::bigint AS credit FROM transfers
            UNION ALL
            SELECT credit, 0, amount FROM transfers) m
         GROUP BY account_id)
    SELECT (SELECT count(*) FROM transfers) AS transfers,
           (SELECT coalesce(bool_or(amount <= 0), false) FROM transfers) AS amount_not_positive,
           (SELECT coalesce(bool_or(debit = credit), false) FROM transfers) AS same_account,
           array_agg(account_id ORDER BY account_id) AS ids, array_agg(debit ORDER BY account_id) AS debits,
           array_agg(credit ORDER BY account_id) AS credits
      INTO v_posting
      FROM movements;
    IF v_posting.transfers = 0 THEN
        RETURN 'transfers_must_not_be_empty';
    ELSIF v_posting.amount_not_positive THEN
        RETURN 'amount_must_be_positive';
    ELSIF v_posting.same_account THEN
        RETURN 'accounts_must_be_different';
    END IF;

    -- Lock the accounts in id order (so concurrent postings never deadlock),
    -- then check every rule before changing anything.
    SELECT count(*) AS locked,
           coalesce(bool_or(guarded AND debits_posted + debit > credits_posted + credit), false) AS exceeds
      INTO v_accounts
      FROM (SELECT a.debits_posted, a.credits_posted, a.debits_must_not_exceed_credits AS guarded, m.debit, m.credit
              FROM ledger_accounts a
              JOIN unnest(v_posting.ids, v_posting.debits, v_posting.credits) AS m (account_id, debit, credit)
                ON m.account_id = a.id
             ORDER BY a.id
               FOR UPDATE OF a) locked;
    IF v_accounts.locked <> cardinality(v_posting.ids) THEN
        RETURN 'account_not_found';
    ELSIF v_accounts.exceeds THEN
        RETURN 'exceeds_credits';
    END IF;

    UPDATE ledger_accounts a
       SET debits_posted = a.debits_posted + m.debit, credits_posted = a.credits_posted + m.credit
      FROM unnest(v_posting.ids, v_posting.debits, v_posting.credits) AS m (account_id, debit, credit)
     WHERE a.id = m.account_id;
    INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code,
                                  reverses_transfer_id)
    SELECT p_posting_id, (t->>'debit')::bigint, (t->>'credit')::bigint, (t->>'amount')::bigint,
           t->>'code', (t->>'reverses')::bigint
      FROM jsonb_array_elements(p_transfers) t;
    RETURN 'ok';
END $$;

-- Claim an idempotency key, recording p_result as the posting's result (the
-- caller corrects it, in the same transaction, if the posting turns out
-- otherwise). Returns the new posting id, or NULL with the earlier posting's
-- result in p_result ('exists' for an identical success).
-- (Its earlier form took no p_result: a database migrated before still has it.)
DROP FUNCTION IF EXISTS ledger_claim(text, text);
CREATE OR REPLACE FUNCTION ledger_claim(p_key text, p_md5 text, INOUT p_result text, OUT p_posting_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_existing record;
BEGIN
    INSERT INTO ledger_postings (idempotency_key, content_md5, result)
    VALUES (p_key, p_md5, p_result)
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
    -- Claimed as posted: most postings are, and one that is not corrects it.
    v_claim := ledger_claim(p_key, md5(p_transfers::text), 'ok');
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    v_result := ledger_apply(v_claim.p_posting_id, p_transfers);
    IF v_result <> 'ok' THEN
        UPDATE ledger_postings SET result = v_result WHERE id = v_claim.p_posting_id;
    END IF;
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
    v_claim := ledger_claim(p_key, md5('reverse:' || p_original_key), 'pending');
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
