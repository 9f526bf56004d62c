/* expect: is on one fence only */
/* Planted: a fence pair with one fence labelled. */
static void publish(uint64_t *p)
{
	/* R1: pairs with A1 in consume(). */
	store_release64(p, 1);
	/* F1: pairs with F1 in nowhere(). */
	fence_seqcst();
}

static uint64_t consume(const uint64_t *p)
{
	/* A1: pairs with R1 in publish(). */
	return load_acquire64(p);
}
