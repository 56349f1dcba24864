"""Helpers every layer may use: atomic files, locks, $MEMBENCH_HOME (files) and the
kill-point hook that tests use to interrupt work at a named place (testhooks)."""
