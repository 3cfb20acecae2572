/* Classifies images with an nnc inference artifact, in plain C: the model library needs
 * neither Rust nor nnc.
 *
 *   nnc train examples/mnist_mlp.nn --out runs/mnist
 *   nnc build examples/mnist_mlp.nn -o mnist-artifact --weights runs/mnist/weights.safetensors
 *   cc examples/c/classify.c -I mnist-artifact -L mnist-artifact -lnnc_model \
 *      -Wl,-rpath,mnist-artifact -o classify
 *   ./classify mnist-artifact digit.pgm more.pgm t10k-images-idx3-ubyte
 *
 * Each argument after the artifact is a binary PGM (P5) or PPM (P6) image, or an
 * uncompressed IDX file of images (every sample in it). Pixels are passed as they are
 * (0-255): the library applies the preprocessing recorded in training. Prints one CSV row
 * per sample: source, predicted class, then the model's outputs. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnc_model.h"

/* Reads a whole file; NULL on error. */
static unsigned char *slurp(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(*size > 0 ? (size_t)*size : 1);
    if (data && fread(data, 1, (size_t)*size, f) != (size_t)*size) {
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

/* Skips whitespace and '#' comments of a PNM header, then reads a number. */
static long pnm_number(const unsigned char *d, long size, long *at) {
    while (*at < size && (d[*at] == ' ' || d[*at] == '\n' || d[*at] == '\r' ||
                          d[*at] == '\t' || d[*at] == '#')) {
        if (d[*at] == '#')
            while (*at < size && d[*at] != '\n') (*at)++;
        else
            (*at)++;
    }
    long v = 0;
    while (*at < size && d[*at] >= '0' && d[*at] <= '9') v = v * 10 + (d[(*at)++] - '0');
    return v;
}

/* The samples in `path` as floats (n samples of `per` numbers); NULL on error. */
static float *load(const char *path, int64_t per, int64_t *n) {
    long size = 0;
    unsigned char *d = slurp(path, &size);
    if (!d) {
        fprintf(stderr, "cannot read %s\n", path);
        return NULL;
    }
    float *x = NULL;
    if (size >= 2 && d[0] == 'P' && (d[1] == '5' || d[1] == '6')) {
        long at = 2, channels = d[1] == '6' ? 3 : 1;
        long w = pnm_number(d, size, &at), h = pnm_number(d, size, &at);
        long max = pnm_number(d, size, &at);
        at++; /* the single whitespace after the header */
        if (max != 255 || w * h * channels != per || at + per > size) {
            fprintf(stderr, "%s: a %ldx%ld image with %ld channel(s); the model takes %lld numbers\n",
                    path, w, h, channels, (long long)per);
        } else if ((x = malloc(sizeof(float) * (size_t)per)) != NULL) {
            for (int64_t i = 0; i < per; i++) x[i] = d[at + i];
            *n = 1;
        }
    } else if (size >= 4 && d[0] == 0 && d[1] == 0 && d[2] == 0x08) {
        int dims = d[3];
        long at = 4, count = 1, total = 1;
        for (int i = 0; i < dims && at + 4 <= size; i++, at += 4) {
            long v = (long)d[at] << 24 | (long)d[at + 1] << 16 | (long)d[at + 2] << 8 | d[at + 3];
            if (i == 0) count = v; else total *= v;
        }
        if (total != per || at + count * per > size) {
            fprintf(stderr, "%s: IDX samples of %ld numbers; the model takes %lld\n", path, total,
                    (long long)per);
        } else if ((x = malloc(sizeof(float) * (size_t)(count * per))) != NULL) {
            for (long i = 0; i < count * per; i++) x[i] = d[at + i];
            *n = count;
        }
    } else {
        fprintf(stderr, "%s: not a PGM/PPM image or an uncompressed IDX file of bytes\n", path);
    }
    free(d);
    return x;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s ARTIFACT_DIR IMAGE_OR_IDX...\n", argv[0]);
        return 2;
    }
    nnc_model *m = nnc_model_load(argv[1]);
    if (!m) {
        fprintf(stderr, "error: %s\n", nnc_last_error());
        return 1;
    }
    int64_t per = nnc_input_size(m), outs = nnc_output_size(m);
    int status = 0;
    for (int a = 2; a < argc; a++) {
        int64_t n = 0;
        float *x = load(argv[a], per, &n);
        float *y = x ? malloc(sizeof(float) * (size_t)(n * outs)) : NULL;
        if (!x || !y || nnc_predict(m, x, n, y) != 0) {
            if (x && y) fprintf(stderr, "error: %s\n", nnc_last_error());
            status = 1;
        } else {
            for (int64_t i = 0; i < n; i++) {
                const float *p = y + i * outs;
                int64_t best = 0;
                for (int64_t j = 1; j < outs; j++)
                    if (p[j] > p[best]) best = j;
                if (n == 1) printf("%s,%lld", argv[a], (long long)best);
                else printf("%s:%lld,%lld", argv[a], (long long)i, (long long)best);
                for (int64_t j = 0; j < outs; j++) printf(",%.9g", p[j]);
                printf("\n");
            }
        }
        free(x);
        free(y);
    }
    nnc_model_free(m);
    return status;
}
