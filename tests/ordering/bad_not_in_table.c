/* expect: is not in the table */
/* Planted: an edge that both sides label, but that the table of edges
 * does not list. */
static void publish(uint64_t *p)
{
	/* R7: pairs with A7 in consume(). */
	store_release64(p, 1);
}

static uint64_t consume(const uint64_t *p)
{
	/* A7: pairs with R7 in publish(). */
	return load_acquire64(p);
}
