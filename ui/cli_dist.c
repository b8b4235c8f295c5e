/* The command line in a job of several ranks (cli.h): messages held until
 * the ranks agree that their setups succeeded, then one of them printed;
 * a failure past the agreement ends the whole job. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dist.h"
#include "threads.h"

enum { BEFORE, AGREED, REFUSED };
static int stage = AGREED; /* one process has nothing to agree on */
static FILE *held;         /* this rank's messages before the agreement */
static char *held_text;
static size_t held_len;
static uint64_t args_hash;
static char prefix[48];

int cli_dist_begin(int argc, char **argv)
{
    if (bd_dist_init(&argc, &argv) != BD_OK) {
        fprintf(stderr, "bitdown: %s\n", bd_error_message());
        return CLI_FAIL;
    }
    if (bd_dist_size() == 1)
        return CLI_OK;
    stage = BEFORE;
    if (bd_dist_rank() != 0) {
        snprintf(prefix, sizeof prefix, "rank %d of %d: ", bd_dist_rank(), bd_dist_size());
        if (!freopen("/dev/null", "w", stdout))
            fclose(stdout);
    }
    /* argv[0] may be another path to the same program on another node */
    for (int i = 1; i < argc; i++)
        args_hash = bd_dist_hash(args_hash, argv[i], strlen(argv[i]) + 1);
    const int threads = bd_threads_get();
    args_hash = bd_dist_hash(args_hash, &threads, sizeof threads);
    held = open_memstream(&held_text, &held_len);
    return CLI_OK;
}

static FILE *sink; /* after a refused agreement: the reason was printed once */

FILE *cli_err(void)
{
    if (stage == REFUSED && (sink || (sink = fopen("/dev/null", "w"))))
        return sink;
    return stage == BEFORE && held ? held : stderr;
}

const char *cli_rank_prefix(void) { return prefix; }

/* Agrees, then prints this rank's held messages if it is the one to. */
static int agree(bd_status s, uint64_t hash)
{
    int printer;
    bd_status r = bd_dist_agree(s, hash, &printer);
    stage = r == BD_OK ? AGREED : REFUSED;
    fclose(held);
    held = NULL;
    if (printer && s != BD_OK)
        fwrite(held_text, 1, held_len, stderr);
    else if (printer) /* the disagreement, found on rank 0 */
        fprintf(stderr, "bitdown: %s\n", bd_error_message());
    free(held_text);
    held_text = NULL;
    return r == BD_OK ? CLI_OK : CLI_FAIL;
}

int cli_dist_agree(const bd_graph *model)
{
    if (stage == REFUSED)
        return CLI_FAIL;
    if (stage != BEFORE)
        return CLI_OK;
    uint64_t h = args_hash;
    for (int v = 0; model && v < model->nvalues; v++) {
        const bd_tensor *t = model->values[v].init;
        if (t)
            h = bd_dist_hash(h, t->data, bd_tensor_nbytes(t));
    }
    return agree(BD_OK, h);
}

/* "rank 3 takes" or "ranks 3 to 5 take" */
static void ranks_take(char *buf, size_t cap, int64_t from, int64_t to)
{
    if (from == to)
        snprintf(buf, cap, "rank %lld takes", (long long)from);
    else
        snprintf(buf, cap, "ranks %lld to %lld take", (long long)from, (long long)to);
}

void cli_dist_share_note(const char *cmd, int64_t batch)
{
    const int n = bd_dist_size();
    if (n == 1 || batch % n == 0 || bd_dist_rank() != 0)
        return;
    const int64_t more = batch % n, base = batch / n;
    char first[64], rest[64];
    ranks_take(first, sizeof first, 0, more - 1);
    ranks_take(rest, sizeof rest, more, n - 1);
    fprintf(stderr,
            "bitdown %s: a global batch of %lld images over %d ranks: %s %lld images, %s %lld "
            "(together the images one process takes)\n",
            cmd, (long long)batch, n, first, (long long)(base + 1), rest, (long long)base);
}

int cli_dist_end(int rc)
{
    if (stage == BEFORE) { /* never reached the agreement: agree now, with rc */
        const int agreed = agree(rc == CLI_OK ? BD_OK : BD_EINVAL, args_hash);
        if (rc == CLI_OK)
            rc = agreed;
    } else if (stage == AGREED && rc != CLI_OK && bd_dist_size() > 1) {
        bd_dist_abort(rc); /* the others may be waiting for this rank in a collective */
    } else if (stage == AGREED && bd_dist_size() > 1 && bd_dist_rank() == 0) {
        int64_t bytes, calls;
        bd_dist_traffic(&bytes, &calls);
        fprintf(stderr, "bitdown: %d ranks; rank 0 summed %.3f MB with the others in %lld "
                        "collectives\n",
                bd_dist_size(), (double)bytes / 1e6, (long long)calls);
    }
    bd_dist_finalize();
    if (sink)
        fclose(sink);
    return rc;
}
