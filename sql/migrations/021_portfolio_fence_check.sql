-- The portfolio worker sends its upsert of user_portfolio and the COMMIT in one round trip. A
-- row the upsert leaves alone (a newer fencing token is stored) must then fail the statement,
-- so that the COMMIT finds the transaction aborted and the events' inbox rows are not committed
-- without their effect. The worker reads the stored tokens after its ROLLBACK, raises its
-- fences and retries, as when it saw the missing rows itself.
CREATE FUNCTION hi_portfolio_fence_check(written bigint, expected bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  IF written < expected THEN
    RAISE EXCEPTION 'portfolio write fenced off: % of % rows written', written, expected
      USING ERRCODE = 'HIF01', HINT = 'a newer fencing token is stored; the writer retries';
  END IF;
  RETURN true;
END
$$;
REVOKE ALL ON FUNCTION hi_portfolio_fence_check(bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION hi_portfolio_fence_check(bigint, bigint) TO hashinsight_app;
