/* check-ordering's own test: every edge labelled on both sides. */
static void publish(uint64_t *p)
{
	/* R1: pairs with A1 in consume(). */
	store_release64(p, 1);
	/* F1: pairs with F1 in other(). */
	fence_seqcst();
}

static uint64_t consume(const uint64_t *p)
{
	/* No edge: a count for the log. */
	load_acquire64(p + 1);
	/* A1: pairs with R1 in publish(). */
	return load_acquire64(p);
}

static void other(void)
{
	/* F1: pairs with F1 in publish(). */
	fence_seqcst();
}
