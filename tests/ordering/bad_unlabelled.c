/* expect: without a label */
/* Planted: an acquire with neither a label nor a "no edge" comment. */
static uint64_t peek(const uint64_t *p)
{
	/* Acquire. */
	return load_acquire64(p);
}
