"""Pure decisions: estimators, policies, replay metrics. No I/O."""
