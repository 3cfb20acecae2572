/* The runtime of an nnc inference artifact: loads the weights, applies the recorded
 * preprocessing, binds the evaluation step's buffers and runs its kernels (compiled by
 * Cranelift into kernels.o, linked with this file into libnnc_model.so), serving their
 * matrix-product callbacks with the plain loops below. Written by nnc; the model's tables
 * are in nnc_model_tables.h, generated next to this file by `nnc build -o`. */

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnc_model.h"

/* The kernel ABI (nnc_kernels::abi): kernel(ctx, bufs, n, start, end). */
typedef void (*sgemm_fn)(size_t m, size_t n, size_t k, float alpha, const float *a,
                         ptrdiff_t rsa, ptrdiff_t csa, const float *b, ptrdiff_t rsb,
                         ptrdiff_t csb, float beta, float *c, ptrdiff_t rsc, ptrdiff_t csc);
typedef struct {
    int64_t m, n, k;
    const float *a;
    int64_t image[3], grid[2], taps[2], step[2], tap[2], pad[2], div[2];
    int64_t first, transposed;
    const float *b;
    int64_t rsb, csb;
    float *c;
    int64_t rsc, csc;
    float alpha, beta;
} windows_gemm;
typedef void (*sgemm_windows_fn)(const windows_gemm *g);
typedef struct {
    sgemm_fn sgemm;
    sgemm_windows_fn sgemm_windows;
} kernel_ctx;
typedef void (*kernel_fn)(const kernel_ctx *ctx, float *const *bufs, int64_t n, int64_t start,
                          int64_t end);

enum { BUF_X, BUF_Y, BUF_WEIGHT, BUF_LOSS, BUF_OUTPUT, BUF_TEMP };

typedef struct {
    const char *name;
    int kind;
    int64_t len_per_batch, len_fixed; /* floats: len_per_batch * n + len_fixed */
    int64_t off_per_batch, off_fixed; /* temporaries: arena offset in floats */
} buffer_decl;

typedef struct {
    kernel_fn f;
    int nparams;
    const int *params;
    int parallel; /* whether the kernel has a parallel loop of extent ext_per_batch*n+ext_fixed */
    int64_t ext_per_batch, ext_fixed;
} kernel_entry;

#include "nnc_model_tables.h"

#define CHUNK 256

struct nnc_model {
    float *weights[NUM_BUFFERS]; /* the weight buffers, by buffer index (others NULL) */
};

static __thread char last_error[1024];

static void set_error(const char *fmt, const char *a, const char *b) {
    snprintf(last_error, sizeof last_error, fmt, a, b);
}

const char *nnc_last_error(void) { return last_error; }
int64_t nnc_input_size(const nnc_model *m) { (void)m; return INPUT_SIZE; }
int64_t nnc_output_size(const nnc_model *m) { (void)m; return OUTPUT_SIZE; }

/* ---- matrix products ---- */

static void sgemm(size_t m, size_t n, size_t k, float alpha, const float *a, ptrdiff_t rsa,
                  ptrdiff_t csa, const float *b, ptrdiff_t rsb, ptrdiff_t csb, float beta,
                  float *c, ptrdiff_t rsc, ptrdiff_t csc) {
    for (size_t i = 0; i < m; i++) {
        float *ci = c + (ptrdiff_t)i * rsc;
        for (size_t j = 0; j < n; j++)
            ci[(ptrdiff_t)j * csc] = beta == 0.0f ? 0.0f : beta * ci[(ptrdiff_t)j * csc];
        for (size_t p = 0; p < k; p++) {
            float aip = alpha * a[(ptrdiff_t)i * rsa + (ptrdiff_t)p * csa];
            const float *bp = b + (ptrdiff_t)p * rsb;
            if (aip == 0.0f) continue;
            if (csb == 1 && csc == 1) {
                for (size_t j = 0; j < n; j++) ci[j] += aip * bp[j];
            } else {
                for (size_t j = 0; j < n; j++)
                    ci[(ptrdiff_t)j * csc] += aip * bp[(ptrdiff_t)j * csb];
            }
        }
    }
}

/* The image position tap t of window position p reads along one axis, or -1 (a zero). */
static int64_t axis_source(int64_t step, int64_t tap, int64_t pad, int64_t div, int64_t p,
                           int64_t t, int64_t len) {
    int64_t pos = p * step + t * tap - pad;
    if (div == 1) return pos >= 0 && pos < len ? pos : -1;
    return pos >= 0 && pos % div == 0 && pos / div < len ? pos / div : -1;
}

/* The image element the untransposed windows matrix has at (row, col), or -1. */
static int64_t window_source(const windows_gemm *g, int64_t row, int64_t col) {
    int64_t h = g->image[0], w = g->image[1], c = g->image[2];
    int64_t pn = g->grid[0], qn = g->grid[1];
    int64_t n = row / (pn * qn), p = row / qn % pn, q = row % qn;
    int64_t ty = col / (g->taps[1] * c), tx = col / c % g->taps[1], ch = col % c;
    int64_t y = axis_source(g->step[0], g->tap[0], g->pad[0], g->div[0], p, ty, h);
    int64_t x = axis_source(g->step[1], g->tap[1], g->pad[1], g->div[1], q, tx, w);
    if (y < 0 || x < 0) return -1;
    return ((n * h + y) * w + x) * c + ch;
}

/* C = alpha * A * B + beta * C with A the windows view: each row of A is gathered into a
 * scratch row, then multiplied as in sgemm. */
static void sgemm_windows(const windows_gemm *g) {
    float *row = malloc(sizeof(float) * (size_t)(g->k > 0 ? g->k : 1));
    if (!row) return;
    for (int64_t i = 0; i < g->m; i++) {
        for (int64_t p = 0; p < g->k; p++) {
            int64_t s = g->transposed ? window_source(g, g->first + p, i)
                                      : window_source(g, g->first + i, p);
            row[p] = s < 0 ? 0.0f : g->a[s];
        }
        sgemm(1, (size_t)g->n, (size_t)g->k, g->alpha, row, 0, 1, g->b, g->rsb, g->csb, g->beta,
              g->c + i * g->rsc, g->rsc, g->csc);
    }
    free(row);
}

static const kernel_ctx CTX = {sgemm, sgemm_windows};

/* ---- weights ---- */

static int read_file(const char *path, unsigned char **data, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return -1; }
    long len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return -1; }
    *data = malloc((size_t)len + 1);
    if (!*data) { fclose(f); return -1; }
    *size = fread(*data, 1, (size_t)len, f);
    fclose(f);
    return *size == (size_t)len ? 0 : -1;
}

/* Finds tensor `name` in a safetensors header; its byte range in [from, to). */
static int find_tensor(const char *header, const char *name, size_t *from, size_t *to) {
    size_t len = strlen(name);
    for (const char *p = header; (p = strchr(p, '"')) != NULL; p++) {
        if (strncmp(p + 1, name, len) != 0 || p[1 + len] != '"') continue;
        const char *q = p + 2 + len;
        while (*q == ' ') q++;
        if (*q != ':') continue;
        q++;
        while (*q == ' ') q++;
        if (*q != '{') continue;
        const char *end = strchr(q, '}');
        const char *dtype = strstr(q, "\"dtype\"");
        const char *offs = strstr(q, "\"data_offsets\"");
        if (!end || !dtype || !offs || dtype > end || offs > end) return -1;
        if (!strstr(dtype, "\"F32\"") || strstr(dtype, "\"F32\"") > end) return -2;
        offs = strchr(offs, '[');
        if (!offs) return -1;
        unsigned long long a, b;
        if (sscanf(offs, "[ %llu , %llu ]", &a, &b) != 2) return -1;
        *from = (size_t)a;
        *to = (size_t)b;
        return 0;
    }
    return -1;
}

nnc_model *nnc_model_load(const char *artifact_dir) {
    last_error[0] = 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/weights.safetensors", artifact_dir);
    unsigned char *file = NULL;
    size_t size = 0;
    if (read_file(path, &file, &size) != 0) {
        set_error("cannot read `%s`%s", path, "");
        free(file);
        return NULL;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0 && size >= 8; i--) hlen = hlen << 8 | file[i];
    if (size < 8 || hlen > size - 8) {
        set_error("`%s` is not a safetensors file%s", path, "");
        free(file);
        return NULL;
    }
    char *header = malloc((size_t)hlen + 1);
    nnc_model *m = calloc(1, sizeof *m);
    if (!header || !m) {
        set_error("out of memory loading `%s`%s", path, "");
        free(file); free(header); free(m);
        return NULL;
    }
    memcpy(header, file + 8, (size_t)hlen);
    header[hlen] = 0;
    const unsigned char *data = file + 8 + hlen;
    size_t data_len = size - 8 - (size_t)hlen;
    for (int b = 0; b < NUM_BUFFERS; b++) {
        if (BUFFERS[b].kind != BUF_WEIGHT) continue;
        size_t from, to, want = (size_t)BUFFERS[b].len_fixed * sizeof(float);
        int found = find_tensor(header, BUFFERS[b].name, &from, &to);
        if (found != 0 || to < from || to > data_len || to - from != want) {
            set_error(found == -2 ? "`%s`: tensor `%s` is not F32"
                                  : "`%s` has no tensor `%s` of the model's shape",
                      path, BUFFERS[b].name);
            nnc_model_free(m);
            free(file); free(header);
            return NULL;
        }
        m->weights[b] = malloc(want > 0 ? want : 1);
        if (!m->weights[b]) {
            set_error("out of memory loading `%s`%s", path, "");
            nnc_model_free(m);
            free(file); free(header);
            return NULL;
        }
        memcpy(m->weights[b], data + from, want);
    }
    free(file);
    free(header);
    return m;
}

void nnc_model_free(nnc_model *m) {
    if (!m) return;
    for (int b = 0; b < NUM_BUFFERS; b++) free(m->weights[b]);
    free(m);
}

/* ---- prediction ---- */

static void preprocess(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float *row = x + i * INPUT_SIZE;
        for (int64_t j = 0; j < INPUT_SIZE; j++) {
            float v = row[j] * PRE_SCALE;
#if PRE_STANDARDIZE
            v = (float)(((double)v - PRE_MEAN[j]) / PRE_STD[j]);
#endif
            row[j] = v;
        }
    }
}

int nnc_predict(nnc_model *m, const float *samples, int64_t n, float *outputs) {
    last_error[0] = 0;
    if (!m || (!samples && n > 0) || (!outputs && n > 0) || n < 0) {
        set_error("nnc_predict: %s%s", "a NULL model, samples or outputs, or a negative count", "");
        return -1;
    }
    int64_t chunk = n < CHUNK ? n : CHUNK;
    if (chunk == 0) return 0;
    float *bufs[NUM_BUFFERS];
    size_t arena_len = (size_t)(ARENA_PER_BATCH * chunk + ARENA_FIXED);
    float *arena = malloc(sizeof(float) * (arena_len > 0 ? arena_len : 1));
    float *x = malloc(sizeof(float) * (size_t)(INPUT_SIZE * chunk));
    float *y = calloc((size_t)(LABEL_SIZE * chunk), sizeof(float));
    float *out = malloc(sizeof(float) * (size_t)(OUTPUT_SIZE * chunk));
    float loss = 0.0f;
    if (!arena || !x || !y || !out) {
        free(arena); free(x); free(y); free(out);
        set_error("nnc_predict: %s%s", "out of memory", "");
        return -1;
    }
    for (int64_t start = 0; start < n; start += chunk) {
        int64_t rows = n - start < chunk ? n - start : chunk;
        memcpy(x, samples + start * INPUT_SIZE, sizeof(float) * (size_t)(INPUT_SIZE * rows));
        preprocess(x, rows);
        for (int b = 0; b < NUM_BUFFERS; b++) {
            const buffer_decl *d = &BUFFERS[b];
            switch (d->kind) {
            case BUF_X: bufs[b] = x; break;
            case BUF_Y: bufs[b] = y; break;
            case BUF_WEIGHT: bufs[b] = m->weights[b]; break;
            case BUF_LOSS: bufs[b] = &loss; break;
            case BUF_OUTPUT: bufs[b] = out; break;
            default: bufs[b] = arena + d->off_per_batch * rows + d->off_fixed; break;
            }
        }
        for (int k = 0; k < NUM_KERNELS; k++) {
            const kernel_entry *e = &KERNELS[k];
            float *args[MAX_PARAMS];
            for (int i = 0; i < e->nparams; i++) args[i] = bufs[e->params[i]];
            int64_t extent = e->parallel ? e->ext_per_batch * rows + e->ext_fixed : 0;
            e->f(&CTX, args, rows, 0, extent);
        }
        memcpy(outputs + start * OUTPUT_SIZE, out, sizeof(float) * (size_t)(OUTPUT_SIZE * rows));
    }
    free(arena); free(x); free(y); free(out);
    return 0;
}
