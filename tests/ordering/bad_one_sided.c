/* expect: has no acquire side */
/* Planted: a release whose label has no acquire side anywhere (the
 * partner named in the comment is not labelled where it is). */
static void publish(uint64_t *p)
{
	/* R1: pairs with A1 in consume(). */
	store_release64(p, 1);
}

static uint64_t consume(const uint64_t *p)
{
	return load_acquire64(p);	/* acquire */
}
