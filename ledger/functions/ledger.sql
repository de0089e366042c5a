-- Ledger functions: re-applied by `posgw db migrate` whenever this file changes.

-- Apply transfers (jsonb array of {debit, credit, amount, code[, reverses]})
-- to a claimed posting. Locks the accounts in id order, so concurrent
-- postings never deadlock; checks every rule before changing anything. The
-- no-overdraft rule applies to each account's net movement in the posting,
-- against its available balance (less its pending debits: holds.sql).
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
           coalesce(bool_or(guarded AND debits_posted + debits_pending + debit > credits_posted + credit), false)
               AS exceeds
      INTO v_accounts
      FROM (SELECT a.debits_posted, a.debits_pending, a.credits_posted, a.debits_must_not_exceed_credits AS guarded,
                   m.debit, m.credit
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

-- What ledger_post_many's state of a posting means (see there).
CREATE OR REPLACE FUNCTION ledger_state_result(p_state integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT (ARRAY['ok', 'exists', 'transfers_must_not_be_empty', 'amount_must_be_positive',
                  'accounts_must_be_different', 'account_not_found', 'exceeds_credits'])[p_state + 1]
$$;

-- Post many postings in one call (group commit): the same results, and the
-- same money moved, as ledger_post called for each of them in order, in a
-- handful of statements for the whole set instead of a handful per posting.
-- The keys are claimed in order; every account of the set is locked once, in
-- id order, and updated once. A guarded account that several postings of the
-- set touch, one of them debiting it, is checked posting by posting, in
-- order, against its balance as the earlier postings of the set left it.
--
-- No statement joins two arrays: that would be a nested loop rescanning one
-- for each row of the other. A posting's state is read by subscript from an
-- integer array (constant time), an account's by its position in the sorted
-- locked ids.
CREATE OR REPLACE FUNCTION ledger_post_many(p_keys text[], p_transfers jsonb[]) RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    -- Each posting's state: 0 posts, 1 its key was taken (before, or earlier
    -- in the set), then the failures in ledger_apply's order: 2 no transfers,
    -- 3 an amount not positive, 4 the same account on both sides, 5 an
    -- unknown account, 6 exceeds credits; 7 undecided, touching a guarded
    -- account where the order of the set's postings matters.
    v_state integer[];
    v_ids bigint[];        -- per posting: its new posting id, 0 when it claimed none
    v_m_n integer[];       -- movements, one per posting and account: net debit and credit
    v_m_account bigint[];
    v_m_debit bigint[];
    v_m_credit bigint[];
    v_a_id bigint[];       -- the locked accounts, by id
    v_a_guarded boolean[];
    v_a_available bigint[];
    v_shared bigint[];     -- the guarded accounts where order matters, and their running balances
    v_shared_available bigint[];
    v_n integer;
    v_k integer;
    v_net bigint;
    v_results text[];
BEGIN
    IF coalesce(cardinality(p_keys), 0) = 0 THEN
        RETURN '{}';
    END IF;
    -- Claim the keys in order, as posted (a posting that is not corrects it
    -- below). A key repeated within the set is claimed by its first posting.
    WITH input AS (
        SELECT k, t, n, row_number() OVER (PARTITION BY k ORDER BY n) AS nth
          FROM unnest(p_keys, p_transfers) WITH ORDINALITY AS i (k, t, n)),
    claimed AS (
        INSERT INTO ledger_postings (idempotency_key, content_md5, result)
        SELECT k, md5(t::text), 'ok' FROM input WHERE nth = 1 ORDER BY n
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING id, idempotency_key),
    claimed_ids AS (
        SELECT jsonb_object_agg(idempotency_key, id) AS by_key FROM claimed)
    SELECT array_agg(CASE WHEN i.nth = 1 THEN coalesce((c.by_key->>i.k)::bigint, 0) ELSE 0 END ORDER BY i.n)
      INTO v_ids
      FROM input i, claimed_ids c;

    -- The transfers' rules.
    SELECT array_agg(CASE WHEN x.id = 0 THEN 1 WHEN r.transfers = 0 THEN 2 WHEN r.amount_not_positive THEN 3
                          WHEN r.same_account THEN 4 ELSE 0 END ORDER BY x.n)
      INTO v_state
      FROM unnest(p_transfers, v_ids) WITH ORDINALITY AS x (tr, id, n),
           LATERAL (SELECT count(*) AS transfers,
                           coalesce(bool_or((t->>'amount')::bigint <= 0), false) AS amount_not_positive,
                           coalesce(bool_or((t->>'debit')::bigint = (t->>'credit')::bigint), false) AS same_account
                      FROM jsonb_array_elements(x.tr) t) r;

    -- The net movement of each posting still in the running, per account.
    SELECT array_agg(n ORDER BY n, account), array_agg(account ORDER BY n, account),
           array_agg(debit ORDER BY n, account), array_agg(credit ORDER BY n, account)
      INTO v_m_n, v_m_account, v_m_debit, v_m_credit
      FROM (SELECT x.n, m.account, sum(m.debit) AS debit, sum(m.credit) AS credit
              FROM unnest(p_transfers, v_state) WITH ORDINALITY AS x (tr, state, n),
                   jsonb_array_elements(x.tr) t,
                   LATERAL (VALUES ((t->>'debit')::bigint, (t->>'amount')::bigint, 0::bigint),
                                   ((t->>'credit')::bigint, 0::bigint, (t->>'amount')::bigint))
                           AS m (account, debit, credit)
             WHERE x.state = 0
             GROUP BY x.n, m.account) movements;

    -- Lock the set's accounts in id order, so concurrent posters never deadlock.
    SELECT array_agg(id ORDER BY id), array_agg(guarded ORDER BY id), array_agg(available ORDER BY id)
      INTO v_a_id, v_a_guarded, v_a_available
      FROM (SELECT a.id, a.debits_must_not_exceed_credits AS guarded,
                   a.credits_posted - a.debits_posted - a.debits_pending AS available
              FROM ledger_accounts a
             WHERE a.id = ANY (v_m_account)
             ORDER BY a.id
               FOR UPDATE) locked;

    -- Decide: an unknown account first, then each guarded account. Only a
    -- guarded account that several postings of the set touch, one of them
    -- debiting it, makes the order matter: a posting touching one waits for
    -- the in-order pass below. (Credits alone never take an account below
    -- zero: a busy merchant's account, credited by every purchase, does not.)
    SELECT array_agg(state ORDER BY n) INTO v_state
      FROM (SELECT n, CASE WHEN bool_or(k IS NULL) THEN 5
                           WHEN bool_or(guarded AND NOT contended AND available - debit + credit < 0) THEN 6
                           WHEN bool_or(guarded AND contended) THEN 7
                           ELSE 0 END AS state
              FROM (SELECT m.n, m.debit, m.credit, a.k, v_a_guarded[a.k] AS guarded,
                           v_a_available[a.k] AS available,
                           count(*) OVER w > 1 AND bool_or(m.debit > m.credit) OVER w AS contended
                      FROM unnest(v_m_n, v_m_account, v_m_debit, v_m_credit) AS m (n, account, debit, credit),
                           LATERAL (SELECT array_position(v_a_id, m.account) AS k) a
                    WINDOW w AS (PARTITION BY m.account)) movements
             GROUP BY n
            UNION ALL
            SELECT n, state FROM unnest(v_state) WITH ORDINALITY AS s (state, n) WHERE state <> 0) decided;

    IF 7 = ANY (v_state) THEN
        SELECT array_agg(account ORDER BY account),
               array_agg(v_a_available[array_position(v_a_id, account)] ORDER BY account)
          INTO v_shared, v_shared_available
          FROM (SELECT m.account
                  FROM unnest(v_m_account, v_m_debit, v_m_credit) AS m (account, debit, credit)
                 GROUP BY m.account
                HAVING count(*) > 1 AND bool_or(m.debit > m.credit)) s
         WHERE v_a_guarded[array_position(v_a_id, account)];
        FOR v_n IN SELECT n FROM unnest(v_state) WITH ORDINALITY AS s (state, n) WHERE state = 7 ORDER BY n LOOP
            v_state[v_n] := CASE WHEN EXISTS (
                SELECT 1 FROM unnest(v_m_n, v_m_account, v_m_debit, v_m_credit) AS m (n, account, debit, credit)
                 WHERE m.n = v_n AND m.account = ANY (v_shared)
                   AND v_shared_available[array_position(v_shared, m.account)] - m.debit + m.credit < 0)
                THEN 6 ELSE 0 END;
            IF v_state[v_n] = 0 THEN
                FOR v_k, v_net IN
                    SELECT array_position(v_shared, m.account), m.debit - m.credit
                      FROM unnest(v_m_n, v_m_account, v_m_debit, v_m_credit) AS m (n, account, debit, credit)
                     WHERE m.n = v_n AND m.account = ANY (v_shared) LOOP
                    v_shared_available[v_k] := v_shared_available[v_k] - v_net;
                END LOOP;
            END IF;
        END LOOP;
    END IF;

    -- Apply: each account once, then the transfers of every posting that posts.
    UPDATE ledger_accounts a
       SET debits_posted = a.debits_posted + s.debit, credits_posted = a.credits_posted + s.credit
      FROM (SELECT m.account, sum(m.debit) AS debit, sum(m.credit) AS credit
              FROM unnest(v_m_n, v_m_account, v_m_debit, v_m_credit) AS m (n, account, debit, credit)
             WHERE v_state[m.n] = 0
             GROUP BY m.account) s
     WHERE a.id = s.account;
    INSERT INTO ledger_transfers (posting_id, debit_account_id, credit_account_id, amount, code,
                                  reverses_transfer_id)
    SELECT x.id, (t->>'debit')::bigint, (t->>'credit')::bigint, (t->>'amount')::bigint, t->>'code',
           (t->>'reverses')::bigint
      FROM unnest(p_transfers, v_ids, v_state) WITH ORDINALITY AS x (tr, id, state, n),
           jsonb_array_elements(x.tr) WITH ORDINALITY AS e (t, k)
     WHERE x.state = 0
     ORDER BY x.n, e.k;
    IF v_state && ARRAY[2, 3, 4, 5, 6] THEN  -- claimed, and failed: the key keeps why
        UPDATE ledger_postings p SET result = ledger_state_result(x.state)
          FROM unnest(v_ids, v_state) AS x (id, state)
         WHERE p.id = x.id AND x.state > 1;
    END IF;

    -- A key taken gives that posting's result, as ledger_claim reads it.
    SELECT array_agg(CASE WHEN x.state <> 1 THEN ledger_state_result(x.state)
                          WHEN e.content_md5 <> md5(x.t::text) THEN 'exists_with_different_content'
                          WHEN e.result = 'ok' THEN 'exists'
                          ELSE e.result END ORDER BY x.n)
      INTO v_results
      FROM unnest(p_keys, p_transfers, v_state) WITH ORDINALITY AS x (k, t, state, n)
      LEFT JOIN LATERAL (SELECT content_md5, result FROM ledger_postings
                          WHERE idempotency_key = x.k AND x.state = 1) e ON true;
    RETURN v_results;
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
