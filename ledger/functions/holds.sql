-- Holds (two-phase transfers, as TigerBeetle's pending transfers): re-applied
-- by `posgw db migrate` whenever this file changes. The table and the
-- pending columns: migration 0045.
--
-- A hold reserves its amount: the debit account's debits_pending and the
-- credit account's credits_pending grow by it, and the debit account's
-- available balance (credits_posted - debits_posted - debits_pending) is what
-- the no-overdraft rule reads, here and in ledger_apply and ledger_post_many.
-- A hold is resolved exactly once, by a posting naming it (resolves_hold_id,
-- unique among successful postings): posted, voided or expired. Each call is
-- one round trip under its own idempotency key, as ledger_post's.

-- Place a hold of p_amount from p_debit to p_credit under p_key, expiring at
-- p_expires_at (NULL: never). Returns 'ok', a key's earlier result, or why it
-- placed nothing (ledger_apply's names; exceeds_credits when the debit
-- account's available balance is short).
CREATE OR REPLACE FUNCTION ledger_hold(p_key text, p_debit bigint, p_credit bigint, p_amount bigint, p_code text,
                                       p_expires_at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_claim record;
    v_result text;
    v_accounts record;
BEGIN
    v_claim := ledger_claim(p_key, md5(concat_ws(':', 'hold', p_debit, p_credit, p_amount, p_code, p_expires_at)),
                            'pending');
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    IF p_amount IS NULL OR p_amount <= 0 THEN
        v_result := 'amount_must_be_positive';
    ELSIF p_debit = p_credit THEN
        v_result := 'accounts_must_be_different';
    ELSE
        -- Both accounts locked in id order, as every posting locks them.
        SELECT count(*) AS locked,
               coalesce(bool_or(id = p_debit AND debits_must_not_exceed_credits
                                AND debits_posted + debits_pending + p_amount > credits_posted), false) AS exceeds
          INTO v_accounts
          FROM (SELECT id, debits_posted, debits_pending, credits_posted, debits_must_not_exceed_credits
                  FROM ledger_accounts WHERE id IN (p_debit, p_credit) ORDER BY id FOR UPDATE) locked;
        IF v_accounts.locked <> 2 THEN
            v_result := 'account_not_found';
        ELSIF v_accounts.exceeds THEN
            v_result := 'exceeds_credits';
        ELSE
            UPDATE ledger_accounts
               SET debits_pending = debits_pending + CASE WHEN id = p_debit THEN p_amount ELSE 0 END,
                   credits_pending = credits_pending + CASE WHEN id = p_credit THEN p_amount ELSE 0 END
             WHERE id IN (p_debit, p_credit);
            INSERT INTO ledger_holds (posting_id, debit_account_id, credit_account_id, amount, code, expires_at)
            VALUES (v_claim.p_posting_id, p_debit, p_credit, p_amount, p_code, p_expires_at);
            v_result := 'ok';
        END IF;
    END IF;
    UPDATE ledger_postings SET result = v_result WHERE id = v_claim.p_posting_id;
    RETURN v_result;
END $$;

-- Release the pending amounts of the given holds (locked by the caller, all
-- pending): their accounts locked in id order, then each account's pending
-- amounts lowered once.
CREATE OR REPLACE FUNCTION ledger_release_holds(p_hold_ids bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ledger_accounts
     WHERE id IN (SELECT debit_account_id FROM ledger_holds WHERE id = ANY (p_hold_ids)
                  UNION SELECT credit_account_id FROM ledger_holds WHERE id = ANY (p_hold_ids))
     ORDER BY id FOR UPDATE;
    UPDATE ledger_accounts a
       SET debits_pending = a.debits_pending - r.debit, credits_pending = a.credits_pending - r.credit
      FROM (SELECT account_id, sum(debit) AS debit, sum(credit) AS credit
              FROM (SELECT debit_account_id AS account_id, amount AS debit, 0::bigint AS credit
                      FROM ledger_holds WHERE id = ANY (p_hold_ids)
                    UNION ALL
                    SELECT credit_account_id, 0, amount FROM ledger_holds WHERE id = ANY (p_hold_ids)) m
             GROUP BY account_id) r
     WHERE a.id = r.account_id;
END $$;

-- Expire the given pending holds (locked by the caller): each under its own
-- posting, 'ledger:expire:<hold id>', which resolves it. Returns the keys
-- that placed them.
CREATE OR REPLACE FUNCTION ledger_expire_locked(p_hold_ids bigint[], p_now timestamptz) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_keys text[];
BEGIN
    IF coalesce(cardinality(p_hold_ids), 0) = 0 THEN
        RETURN '{}';
    END IF;
    PERFORM ledger_release_holds(p_hold_ids);
    INSERT INTO ledger_postings (idempotency_key, content_md5, result, resolves_hold_id)
    SELECT 'ledger:expire:' || id, md5('expire:' || id), 'ok', id FROM unnest(p_hold_ids) AS h (id) ORDER BY id;
    UPDATE ledger_holds SET status = 'expired', resolved_at = p_now WHERE id = ANY (p_hold_ids);
    SELECT array_agg(p.idempotency_key ORDER BY h.id) INTO v_keys
      FROM ledger_holds h JOIN ledger_postings p ON p.id = h.posting_id
     WHERE h.id = ANY (p_hold_ids);
    RETURN v_keys;
END $$;

-- Expire up to p_limit pending holds whose time has come at p_now, oldest
-- first; holds another transaction has locked (being posted or voided, or
-- expired by another gateway) are skipped, so each is expired once. Returns
-- the keys that placed the holds expired.
CREATE OR REPLACE FUNCTION ledger_expire_holds(p_now timestamptz, p_limit integer) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(id ORDER BY id) INTO v_ids
      FROM (SELECT id FROM ledger_holds
             WHERE status = 'pending' AND expires_at <= p_now
             ORDER BY expires_at, id LIMIT p_limit
               FOR UPDATE SKIP LOCKED) due;
    RETURN ledger_expire_locked(v_ids, p_now);
END $$;

-- The hold placed under p_hold_key, locked, for its resolution: its row, with
-- status 'expired' when its time had come at p_now (expired now, by this
-- call), or NULL when there is none.
CREATE OR REPLACE FUNCTION ledger_lock_hold(p_hold_key text, p_now timestamptz) RETURNS ledger_holds
LANGUAGE plpgsql AS $$
DECLARE
    v_hold ledger_holds;
BEGIN
    SELECT h.* INTO v_hold FROM ledger_holds h JOIN ledger_postings p ON p.id = h.posting_id
     WHERE p.idempotency_key = p_hold_key
       FOR UPDATE OF h;
    IF FOUND AND v_hold.status = 'pending' AND v_hold.expires_at <= p_now THEN
        PERFORM ledger_expire_locked(ARRAY[v_hold.id], p_now);
        v_hold.status := 'expired';
    END IF;
    RETURN v_hold;
END $$;

-- Why a hold in p_status cannot be resolved again.
CREATE OR REPLACE FUNCTION ledger_hold_resolved_result(p_status text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_status WHEN 'posted' THEN 'hold_already_posted' WHEN 'voided' THEN 'hold_already_voided'
                         WHEN 'expired' THEN 'hold_expired' END
$$;

-- Post the hold placed under p_hold_key, under p_key: its pending amount is
-- released and p_transfers (jsonb array as ledger_post's) are applied in its
-- place. The amount posted is what the transfers debit from the hold's debit
-- account: from 1 fen up to p_amount_max (NULL: the hold's amount; a poster
-- allowing more passes its limit, and the excess must be covered by the
-- available balance: exceeds_credits). Returns 'ok', a key's earlier result,
-- hold_not_found, hold_already_posted, hold_already_voided, hold_expired,
-- exceeds_hold_amount, or ledger_apply's reason; on any failure the hold
-- stays as it was (pending, or expired by this call).
CREATE OR REPLACE FUNCTION ledger_post_hold(p_key text, p_hold_key text, p_transfers jsonb, p_amount_max bigint,
                                            p_now timestamptz DEFAULT now()) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_claim record;
    v_hold ledger_holds;
    v_amount bigint;
    v_result text;
BEGIN
    v_claim := ledger_claim(p_key, md5(concat_ws(':', 'post', p_hold_key, p_transfers::text, p_amount_max)),
                            'pending');
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    v_hold := ledger_lock_hold(p_hold_key, p_now);
    SELECT coalesce(sum((t->>'amount')::bigint), 0) INTO v_amount
      FROM jsonb_array_elements(p_transfers) t WHERE (t->>'debit')::bigint = v_hold.debit_account_id;
    IF v_hold.id IS NULL THEN
        v_result := 'hold_not_found';
    ELSIF v_hold.status <> 'pending' THEN
        v_result := ledger_hold_resolved_result(v_hold.status);
    ELSIF v_amount <= 0 THEN
        v_result := 'amount_must_be_positive';
    ELSIF v_amount > coalesce(p_amount_max, v_hold.amount) THEN
        v_result := 'exceeds_hold_amount';
    ELSE
        -- Every account of the hold and the transfers locked in id order
        -- first, then the hold's reservation released and the transfers
        -- applied against the balance it leaves; put back if they fail.
        PERFORM 1 FROM ledger_accounts
         WHERE id IN (SELECT (t->>'debit')::bigint FROM jsonb_array_elements(p_transfers) t
                      UNION SELECT (t->>'credit')::bigint FROM jsonb_array_elements(p_transfers) t
                      UNION VALUES (v_hold.debit_account_id), (v_hold.credit_account_id))
         ORDER BY id FOR UPDATE;
        PERFORM ledger_release_holds(ARRAY[v_hold.id]);
        v_result := ledger_apply(v_claim.p_posting_id, p_transfers);
        IF v_result = 'ok' THEN
            UPDATE ledger_holds SET status = 'posted', posted_amount = v_amount, resolved_at = p_now
             WHERE id = v_hold.id;
        ELSE
            UPDATE ledger_accounts
               SET debits_pending = debits_pending + CASE WHEN id = v_hold.debit_account_id THEN v_hold.amount
                                                          ELSE 0 END,
                   credits_pending = credits_pending + CASE WHEN id = v_hold.credit_account_id THEN v_hold.amount
                                                            ELSE 0 END
             WHERE id IN (v_hold.debit_account_id, v_hold.credit_account_id);
        END IF;
    END IF;
    UPDATE ledger_postings
       SET result = v_result, resolves_hold_id = CASE WHEN v_result = 'ok' THEN v_hold.id END
     WHERE id = v_claim.p_posting_id;
    RETURN v_result;
END $$;

-- Void the hold placed under p_hold_key, under p_key: its reservation
-- released, nothing moved. Returns 'ok', a key's earlier result,
-- hold_not_found, hold_already_posted, hold_already_voided or hold_expired.
CREATE OR REPLACE FUNCTION ledger_void_hold(p_key text, p_hold_key text, p_now timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_claim record;
    v_hold ledger_holds;
    v_result text;
BEGIN
    v_claim := ledger_claim(p_key, md5('void:' || p_hold_key), 'pending');
    IF v_claim.p_posting_id IS NULL THEN
        RETURN v_claim.p_result;
    END IF;
    v_hold := ledger_lock_hold(p_hold_key, p_now);
    IF v_hold.id IS NULL THEN
        v_result := 'hold_not_found';
    ELSIF v_hold.status <> 'pending' THEN
        v_result := ledger_hold_resolved_result(v_hold.status);
    ELSE
        PERFORM ledger_release_holds(ARRAY[v_hold.id]);
        UPDATE ledger_holds SET status = 'voided', resolved_at = p_now WHERE id = v_hold.id;
        v_result := 'ok';
    END IF;
    UPDATE ledger_postings
       SET result = v_result, resolves_hold_id = CASE WHEN v_result = 'ok' THEN v_hold.id END
     WHERE id = v_claim.p_posting_id;
    RETURN v_result;
END $$;

-- Expire those of the holds placed under p_hold_keys that are pending and due
-- at p_now, skipping any another transaction has locked. Returns the keys of
-- the holds expired. (A caller that locks its own rows first, as the gateway
-- locks a pre-authorization's, expires its holds here in the same order.)
CREATE OR REPLACE FUNCTION ledger_expire_holds_by_key(p_hold_keys text[], p_now timestamptz) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(id ORDER BY id) INTO v_ids
      FROM (SELECT h.id FROM ledger_holds h JOIN ledger_postings p ON p.id = h.posting_id
             WHERE p.idempotency_key = ANY (p_hold_keys) AND h.status = 'pending' AND h.expires_at <= p_now
             ORDER BY h.id
               FOR UPDATE OF h SKIP LOCKED) due;
    RETURN ledger_expire_locked(v_ids, p_now);
END $$;
