// The bank's tables and functions (docs/dbfrontend.md "Database"). Installed by
// `mtcp-bank-client setup`; the front-end only calls the functions.
//
//   bank_account(id, balance)            balance >= 0 and <= kBalanceMax (CHECK)
//   bank_session(conn, epoch, pid, ...)  one row per M-TCP connection: its ownership epoch and
//                                        the backend that serves it (for fencing)
//   bank_reply(conn, seq, reply)         the exact reply of every committed request
//   bank_txreply(conn, seq, reply)       the reply to each operation inside an interactive
//                                        transaction, journaled before it is sent
//   bank_ledger(id, conn, seq, account, delta)  every applied balance change (the checker's
//                                        history; no uniqueness, so a double apply would show)
//
// Business errors (unknown account, insufficient funds, overflow) are reply text, not SQL
// errors, so an interactive transaction stays open after one. SQLSTATE MT001 = fenced, MT002 = a COMMIT answered before.
#pragma once
#include <cstdint>

namespace mtcp::bank {

inline constexpr const char* kSchemaSql = R"SQL(
CREATE TABLE IF NOT EXISTS bank_account (id bigint PRIMARY KEY,
  balance bigint NOT NULL CHECK (balance >= 0 AND balance <= 1000000000000000));
CREATE TABLE IF NOT EXISTS bank_session (conn bigint PRIMARY KEY, epoch bigint NOT NULL,
  pid int, backend_start timestamptz);
CREATE TABLE IF NOT EXISTS bank_reply (conn bigint NOT NULL, seq bigint NOT NULL,
  reply text NOT NULL, PRIMARY KEY (conn, seq));
CREATE TABLE IF NOT EXISTS bank_txreply (conn bigint NOT NULL, seq bigint NOT NULL,
  reply text NOT NULL, PRIMARY KEY (conn, seq));
CREATE TABLE IF NOT EXISTS bank_ledger (id bigserial PRIMARY KEY, conn bigint NOT NULL,
  seq bigint NOT NULL, account bigint NOT NULL, delta bigint NOT NULL);

-- One banking operation inside the caller's transaction; returns the reply body.
CREATE OR REPLACE FUNCTION bank_op(p_conn bigint, p_seq bigint, p_op text, p_a bigint,
    p_b bigint, p_amount bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  lim constant bigint := 1000000000000000;
  ba bigint; bb bigint; n bigint;
BEGIN
  IF p_op = 'OPEN' THEN
    INSERT INTO bank_account VALUES (p_a, p_amount) ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN RETURN 'ERR account ' || p_a || ' exists'; END IF;
    INSERT INTO bank_ledger (conn, seq, account, delta) VALUES (p_conn, p_seq, p_a, p_amount);
    RETURN 'OK ' || p_amount;
  ELSIF p_op = 'AUDIT' THEN
    SELECT coalesce(sum(balance), 0), count(*) INTO ba, n FROM bank_account;
    RETURN 'OK ' || ba || ' ' || n;
  ELSIF p_op = 'TRANSFER' THEN
    -- Both rows read and locked by one statement, in id order (the lock follows the sort):
    -- two opposite transfers queue instead of deadlocking, where each deadlock would cost a
    -- deadlock_timeout before PostgreSQL breaks it.
    SELECT max(t.balance) FILTER (WHERE t.id = p_a), max(t.balance) FILTER (WHERE t.id = p_b) INTO ba, bb
      FROM (SELECT id, balance FROM bank_account WHERE id IN (p_a, p_b) ORDER BY id FOR UPDATE) t;
    IF ba IS NULL THEN RETURN 'ERR unknown account ' || p_a; END IF;
    IF bb IS NULL THEN RETURN 'ERR unknown account ' || p_b; END IF;
    IF ba < p_amount THEN RETURN 'ERR insufficient funds'; END IF;
    IF bb > lim - p_amount THEN RETURN 'ERR balance would exceed ' || lim; END IF;
    UPDATE bank_account SET balance = balance + CASE WHEN id = p_a THEN -p_amount ELSE p_amount END
      WHERE id IN (p_a, p_b);
    INSERT INTO bank_ledger (conn, seq, account, delta)
      VALUES (p_conn, p_seq, p_a, -p_amount), (p_conn, p_seq, p_b, p_amount);
    RETURN 'OK ' || (ba - p_amount) || ' ' || (bb + p_amount);
  END IF;
  SELECT balance INTO ba FROM bank_account WHERE id = p_a FOR UPDATE;
  IF NOT FOUND THEN RETURN 'ERR unknown account ' || p_a; END IF;
  IF p_op = 'BALANCE' THEN
    RETURN 'OK ' || ba;
  ELSIF p_op = 'DEPOSIT' THEN
    IF ba > lim - p_amount THEN RETURN 'ERR balance would exceed ' || lim; END IF;
    UPDATE bank_account SET balance = balance + p_amount WHERE id = p_a;
    INSERT INTO bank_ledger (conn, seq, account, delta) VALUES (p_conn, p_seq, p_a, p_amount);
    RETURN 'OK ' || (ba + p_amount);
  ELSIF p_op = 'WITHDRAW' THEN
    IF ba < p_amount THEN RETURN 'ERR insufficient funds'; END IF;
    UPDATE bank_account SET balance = balance - p_amount WHERE id = p_a;
    INSERT INTO bank_ledger (conn, seq, account, delta) VALUES (p_conn, p_seq, p_a, -p_amount);
    RETURN 'OK ' || (ba - p_amount);
  END IF;
  RETURN 'ERR unknown operation';
END $$;

-- The connection's session row must not name a newer owner; it then records this epoch.
CREATE OR REPLACE FUNCTION bank_fence(p_conn bigint, p_epoch bigint) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
  UPDATE bank_session SET epoch = p_epoch WHERE conn = p_conn AND epoch <= p_epoch;
  IF NOT FOUND THEN
    IF EXISTS (SELECT 1 FROM bank_session WHERE conn = p_conn) THEN
      RAISE EXCEPTION 'fenced: connection % has an owner with a newer epoch than %', p_conn, p_epoch
        USING ERRCODE = 'MT001';
    END IF;
    INSERT INTO bank_session (conn, epoch) VALUES (p_conn, p_epoch);
  END IF;
END $$;

-- A request outside an interactive transaction: answered from the stored reply if it was
-- committed before, else fenced, applied and its reply stored, all in this one transaction.
CREATE OR REPLACE FUNCTION bank_apply(p_conn bigint, p_epoch bigint, p_seq bigint, p_op text,
    p_a bigint, p_b bigint, p_amount bigint) RETURNS text LANGUAGE plpgsql AS $$
DECLARE r text;
BEGIN
  SELECT reply INTO r FROM bank_reply WHERE conn = p_conn AND seq = p_seq;
  IF FOUND THEN RETURN r; END IF;
  PERFORM bank_fence(p_conn, p_epoch);
  r := bank_op(p_conn, p_seq, p_op, p_a, p_b, p_amount);
  INSERT INTO bank_reply VALUES (p_conn, p_seq, r);
  RETURN r;
END $$;

-- The last statement before COMMIT of an interactive transaction: fence and store the reply.
-- MT002 if a reply is stored for (conn, seq) already (the caller rolls back and answers it);
-- the primary key refuses one stored concurrently.
CREATE OR REPLACE FUNCTION bank_commit(p_conn bigint, p_epoch bigint, p_seq bigint, p_reply text)
    RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM bank_reply WHERE conn = p_conn AND seq = p_seq) THEN
    RAISE EXCEPTION 'connection % request % was answered before', p_conn, p_seq USING ERRCODE = 'MT002';
  END IF;
  PERFORM bank_fence(p_conn, p_epoch);
  INSERT INTO bank_reply VALUES (p_conn, p_seq, p_reply);
  RETURN p_reply;
END $$;

-- First writer wins: records p_reply for (conn, seq) unless a reply is there already, and
-- returns the one recorded. p_outcome false: the reply to an operation inside an open
-- transaction (bank_txreply), written on a second database session before the client may see
-- it; a new owner that re-executes the operation after a crash answers with the recorded one.
-- p_outcome true: a COMMIT's ABORTED outcome, stored in bank_reply like a committed reply.
CREATE OR REPLACE FUNCTION bank_journal(p_conn bigint, p_seq bigint, p_reply text,
    p_outcome boolean) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  tbl constant text := CASE WHEN p_outcome THEN 'bank_reply' ELSE 'bank_txreply' END;
  r text;
BEGIN
  EXECUTE format('INSERT INTO %I VALUES ($1, $2, $3) ON CONFLICT DO NOTHING', tbl)
    USING p_conn, p_seq, p_reply;
  EXECUTE format('SELECT reply FROM %I WHERE conn = $1 AND seq = $2', tbl) INTO r USING p_conn, p_seq;
  RETURN r;
END $$;

-- A front-end takes a connection over (at every new database session): refused if a newer
-- owner exists; else the backend that served the connection before is signalled to end (not
-- waited for: a former transaction that fenced holds the session row, so the upsert below
-- waits for its outcome; one that did not fence can no longer commit) and this backend is
-- recorded.
CREATE OR REPLACE FUNCTION bank_claim(p_conn bigint, p_epoch bigint) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE v_epoch bigint; v_pid int; v_start timestamptz; me_start timestamptz; killed boolean;
BEGIN
  -- A former owner that is alive releases its backend as it hands the connection over (pid
  -- set to NULL, docs/dbfrontend.md "Spare sessions"), within a millisecond or two. Give it
  -- up to about 25 ms before ending that backend in the middle of its release: a backend
  -- ended there is one more backend to start. A stopped or cut-off owner never releases
  -- (its backend, maybe holding row locks, is ended below); a dead one's backend is gone.
  -- (Each statement here sees what was committed before it: the claim runs READ COMMITTED.)
  FOR i IN 1..25 LOOP
    SELECT pid, backend_start INTO v_pid, v_start FROM bank_session WHERE conn = p_conn;
    EXIT WHEN v_pid IS NULL OR v_pid = pg_backend_pid() OR NOT EXISTS (
      SELECT 1 FROM pg_stat_activity a WHERE a.pid = v_pid AND a.backend_start = v_start);
    PERFORM pg_sleep(0.001);
  END LOOP;
  -- Locked: a former owner's release of its backend (pid set to NULL, then the backend
  -- serves others) either committed before (no pid: nothing is ended) or waits for this
  -- claim, and the backend ends while it waits, before it could serve anyone else.
  SELECT epoch, pid, backend_start INTO v_epoch, v_pid, v_start FROM bank_session WHERE conn = p_conn FOR UPDATE;
  IF FOUND AND v_epoch > p_epoch THEN
    RAISE EXCEPTION 'fenced: connection % has an owner with a newer epoch than %', p_conn, p_epoch
      USING ERRCODE = 'MT001';
  END IF;
  killed := false;
  IF v_pid IS NOT NULL AND v_pid <> pg_backend_pid() THEN
    SELECT pg_terminate_backend(a.pid) INTO killed FROM pg_stat_activity a
      WHERE a.pid = v_pid AND a.backend_start = v_start;
  END IF;
  SELECT backend_start INTO me_start FROM pg_stat_activity WHERE pid = pg_backend_pid();
  INSERT INTO bank_session VALUES (p_conn, p_epoch, pg_backend_pid(), me_start)
    ON CONFLICT (conn) DO UPDATE SET epoch = EXCLUDED.epoch, pid = EXCLUDED.pid,
      backend_start = EXCLUDED.backend_start WHERE bank_session.epoch <= EXCLUDED.epoch;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'fenced: connection % has an owner with a newer epoch than %', p_conn, p_epoch
      USING ERRCODE = 'MT001';
  END IF;
  RETURN CASE WHEN coalesce(killed, false) THEN 'claimed, former backend ' || v_pid || ' ended' ELSE 'claimed' END;
END $$;
)SQL";

// Run once by each spare database session of a member (pg_async.h, PgSpares) before an app
// takes it: the functions a session calls, on connection 0, inside a transaction that is
// rolled back, so nothing is left behind (it runs READ COMMITTED: no predicate locks); the
// backend has them compiled and its caches filled when an app's claim arrives.
inline constexpr const char* kWarmSql =
    "BEGIN; SELECT bank_claim(0, 0); SELECT bank_apply(0, 0, 1, 'BALANCE', 0, 0, 0); "
    "SELECT bank_commit(0, 0, 2, 'OK committed'); ROLLBACK";

inline constexpr int64_t kAmountMax = 1000000000000;         // largest amount in one request
inline constexpr int64_t kBalanceMax = 1000000000000000;     // largest balance (CHECK above)

}  // namespace mtcp::bank
