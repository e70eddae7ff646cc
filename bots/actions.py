"""Every button's action id, in one place. Adapters carry them in their platform's ids (Discord custom_ids, Slack
action_ids, terminal keys) and hand them back in `Action.action_id`; the feature that owns one claims it."""

# Create and refine: the buttons under a result. The refinements generate; the ratings only record feedback.
REGENERATE, MORE, SHORTER, LONGER, TONE = "regenerate", "more", "shorter", "longer", "tone"
RATE_UP, RATE_DOWN = "rate_up", "rate_down"
# One variant of a several-variant result: a select whose values are "<variant number> <refinement>" ("2 shorter").
VARIANT = "variant"
REFINEMENTS = frozenset({REGENERATE, MORE, SHORTER, LONGER, TONE, VARIANT})

# /forget asks before deleting.
FORGET_CONFIRM, FORGET_CANCEL = "forget_confirm", "forget_cancel"

# Brainstorm controls: add an idea, vote, next round, wrap up.
BRAINSTORM_IDEA, BRAINSTORM_VOTE = "brainstorm_idea", "brainstorm_vote"
BRAINSTORM_NEXT, BRAINSTORM_WRAP = "brainstorm_next", "brainstorm_wrap"
BRAINSTORM_ACTIONS = frozenset({BRAINSTORM_IDEA, BRAINSTORM_VOTE, BRAINSTORM_NEXT, BRAINSTORM_WRAP})

# Drops carry RATE_UP and RATE_DOWN too: a rating on a drop is its engagement.
