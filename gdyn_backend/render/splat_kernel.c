/* gdyn's native CPU kernel: the default renderer (softmax splat, stretch fill, push-pull fill).
 *
 * Built on first use by gdyn_backend/render/native.py with the machine's C
 * compiler and loaded with ctypes (no Python headers, no torch headers); where
 * no compiler works, gdyn renders on the portable path (scipy.sparse and torch:
 * the same frames to float rounding, slower). Each function below computes what
 * a named piece of splat.py, holes.py or default.py computes, and says which.
 * See splat.py for what is summed: each source pixel p lands at
 * t = p + flow(p), clamped to [-BORDER, W+BORDER-1] x [-BORDER, H+BORDER-1]
 * (NaN lands on the low border), and adds values(p) [8 floats] times the four
 * bilinear weights to the padded output cells around t.
 *
 * Layout: flow_x, flow_y [H*W] float32; values [H*W, 8] float32 (unused
 * channels zero); out [rows, PW, 8] float32 with PW = W + 2*BORDER + 1, whose
 * row 0 is padded output row out_row0 (output row out_row0 - BORDER).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BORDER 2
#define CHANNELS 8

typedef float lanes __attribute__((vector_size(16)));              /* 4 channels */
typedef float lanes_u __attribute__((vector_size(16), aligned(4))); /* the same, unaligned in memory */

#if defined(__x86_64__) && defined(__ELF__) && defined(__has_attribute)
#if __has_attribute(target_clones)
#define WIDEST_SIMD __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef WIDEST_SIMD
#define WIDEST_SIMD
#endif

/* v clamped to [lo, hi]; NaN gives lo (comparisons, not fminf/fmaxf: those are library calls without -ffast-math). */
static inline float clampf(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

/* Padded output rows reached by source rows r0..r1-1: [lo, hi) written to rows[0..1]. */
void gdyn_band_rows(const float *flow_y, int64_t height, int64_t width, int64_t r0, int64_t r1, int64_t *rows) {
    const float bottom = (float)(height + BORDER - 1);
    float lo = bottom, hi = (float)-BORDER;
    for (int64_t y = r0; y < r1; ++y) {
        const float *row = flow_y + y * width;
        for (int64_t x = 0; x < width; ++x) {
            const float ty = clampf(row[x] + (float)y, (float)-BORDER, bottom);
            lo = ty < lo ? ty : lo;
            hi = ty > hi ? ty : hi;
        }
    }
    rows[0] = (int64_t)floorf(lo) + BORDER;
    rows[1] = (int64_t)floorf(hi) + BORDER + 2;
}

/* Adds the sums of source rows r0..r1-1 to the output rows held by out ([out_rows, PW, 8],
 * its row 0 being padded output row out_row0); contributions to rows outside it are left
 * out (another call, for those rows, adds them). */
static inline void splat_rows(const float *restrict flow_x, const float *restrict flow_y,
                              const float *restrict values, int64_t height, int64_t width, int64_t r0, int64_t r1,
                              float *restrict out, int64_t out_row0, int64_t out_rows) {
    const int64_t pw = width + 2 * BORDER + 1, row_lanes = 2 * pw;
    const float right = (float)(width + BORDER - 1), bottom = (float)(height + BORDER - 1);
    for (int64_t y = r0; y < r1; ++y) {
        /* The right-hand corners of one source usually are the left-hand corners of
         * the next: they are carried in registers and written once. */
        lanes_u *carried = 0;
        lanes carry_top0 = {0}, carry_top1 = {0}, carry_bottom0 = {0}, carry_bottom1 = {0};
        for (int64_t x = 0; x < width; ++x) {
            const int64_t p = y * width + x;
            const float tx = clampf(flow_x[p] + (float)x, (float)-BORDER, right);
            const float ty = clampf(flow_y[p] + (float)y, (float)-BORDER, bottom);
            const float x0 = floorf(tx), y0 = floorf(ty), fx = tx - x0, fy = ty - y0;
            const int64_t row = (int64_t)y0 + BORDER - out_row0;
            if (row < -1 || row >= out_rows) continue;  /* lands wholly outside these rows */
            const lanes_u *v = (const lanes_u *)(values + p * CHANNELS);
            const lanes v0 = v[0], v1 = v[1];
            const lanes top0 = v0 * (1.0f - fy), top1 = v1 * (1.0f - fy);
            const lanes bottom0 = v0 * fy, bottom1 = v1 * fy;
            if (row < 0 || row + 1 >= out_rows) {  /* straddles an edge of these rows: its one row inside */
                const int64_t inside = row < 0 ? row + 1 : row;
                const lanes a0 = row < 0 ? bottom0 : top0, a1 = row < 0 ? bottom1 : top1;
                lanes_u *e = (lanes_u *)(out + (inside * pw + (int64_t)x0 + BORDER) * CHANNELS);
                e[0] += a0 * (1.0f - fx);
                e[1] += a1 * (1.0f - fx);
                e[2] += a0 * fx;
                e[3] += a1 * fx;
                continue;  /* what is carried stays pending for its own cell */
            }
            lanes_u *o = (lanes_u *)(out + (row * pw + (int64_t)x0 + BORDER) * CHANNELS);
            lanes left_top0 = top0 * (1.0f - fx), left_top1 = top1 * (1.0f - fx);
            lanes left_bottom0 = bottom0 * (1.0f - fx), left_bottom1 = bottom1 * (1.0f - fx);
            if (o == carried) {
                left_top0 += carry_top0;
                left_top1 += carry_top1;
                left_bottom0 += carry_bottom0;
                left_bottom1 += carry_bottom1;
            } else if (carried) {
                carried[0] += carry_top0;
                carried[1] += carry_top1;
                carried[row_lanes] += carry_bottom0;
                carried[row_lanes + 1] += carry_bottom1;
            }
            o[0] += left_top0;
            o[1] += left_top1;
            o[row_lanes] += left_bottom0;
            o[row_lanes + 1] += left_bottom1;
            carry_top0 = top0 * fx;
            carry_top1 = top1 * fx;
            carry_bottom0 = bottom0 * fx;
            carry_bottom1 = bottom1 * fx;
            carried = o + 2;
        }
        if (carried) {
            carried[0] += carry_top0;
            carried[1] += carry_top1;
            carried[row_lanes] += carry_bottom0;
            carried[row_lanes + 1] += carry_bottom1;
        }
    }
}

/* Adds the sums of source rows r0..r1-1 to out ([out_rows, PW, 8], first row out_row0). */
WIDEST_SIMD
void gdyn_splat_band(const float *restrict flow_x, const float *restrict flow_y,
                     const float *restrict values, int64_t height, int64_t width, int64_t r0, int64_t r1,
                     float *restrict out, int64_t out_row0, int64_t out_rows) {
    splat_rows(flow_x, flow_y, values, height, width, r0, r1, out, out_row0, out_rows);
}

/* ---- Push-pull hole fill (holes.py), channel-last, for the CPU ----
 * A plane is addressed as base[y * row_stride + x * pixel_stride + channel], in floats. */

/* One pull step (holes._halved): the alpha-weighted means of the 2x2 blocks of colour
 * [h, w, channels] at half size, [ceil(h/2), ceil(w/2), channels] contiguous, and their
 * alpha, min(summed weight, 1) (0 where the summed weight is at most 1e-12). */
static inline void halve(const float *colour, int64_t colour_row, int64_t colour_pixel,
                         const float *alpha, int64_t alpha_row, int64_t alpha_pixel,
                         int64_t height, int64_t width, const int64_t channels, float *out, float *out_alpha) {
    const int64_t half_h = (height + 1) / 2, half_w = (width + 1) / 2;
    float sums[16];
    for (int64_t y = 0; y < half_h; ++y) {
        for (int64_t x = 0; x < half_w; ++x) {
            float weight = 0.0f;
            for (int64_t c = 0; c < channels; ++c) sums[c] = 0.0f;
            for (int64_t dy = 0; dy < 2; ++dy) {
                const int64_t sy = 2 * y + dy;
                if (sy >= height) break;
                for (int64_t dx = 0; dx < 2; ++dx) {
                    const int64_t sx = 2 * x + dx;
                    if (sx >= width) break;
                    const float a = alpha[sy * alpha_row + sx * alpha_pixel];
                    const float *p = colour + sy * colour_row + sx * colour_pixel;
                    for (int64_t c = 0; c < channels; ++c) sums[c] += p[c] * a;
                    weight += a;
                }
            }
            float *o = out + (y * half_w + x) * channels;
            const float divisor = weight > 1e-12f ? weight : 1e-12f;
            for (int64_t c = 0; c < channels; ++c) o[c] = sums[c] / divisor;
            out_alpha[y * half_w + x] = weight > 1e-12f ? (weight < 1.0f ? weight : 1.0f) : 0.0f;
        }
    }
}

void gdyn_halve(const float *colour, int64_t colour_row, int64_t colour_pixel,
                const float *alpha, int64_t alpha_row, int64_t alpha_pixel,
                int64_t height, int64_t width, int64_t channels, float *out, float *out_alpha) {
    switch (channels) {
    case 3: halve(colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel, height, width, 3, out, out_alpha); break;
    case 4: halve(colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel, height, width, 4, out, out_alpha); break;
    default: halve(colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel, height, width, channels, out,
                   out_alpha);
    }
}

/* One push step (holes._coarse_fill): out = lerp(up, colour, alpha), up = coarse
 * [coarse_h, coarse_w, channels] upsampled 2x bilinearly as torch's interpolate
 * (align_corners=False) and cut to [height, width]; out contiguous [height, width, channels]. */
static inline void push(const float *coarse, int64_t coarse_h, int64_t coarse_w,
                        const float *colour, int64_t colour_row, int64_t colour_pixel,
                        const float *alpha, int64_t alpha_row, int64_t alpha_pixel,
                        int64_t height, int64_t width, const int64_t channels, float *out) {
    /* Output x reads coarse columns x0 and x1 (weight lx on x1) as torch computes them:
     * s = max((x + 0.5) / 2 - 0.5, 0), x0 = floor(s), x1 = min(x0 + 1, coarse_w - 1); rows alike. */
    for (int64_t y = 0; y < height; ++y) {
        float sy = ((float)y + 0.5f) * 0.5f - 0.5f;
        sy = sy > 0.0f ? sy : 0.0f;
        const int64_t y0 = (int64_t)sy, y1 = y0 + 1 < coarse_h ? y0 + 1 : coarse_h - 1;
        const float ly = sy - (float)y0;
        const float *row0 = coarse + y0 * coarse_w * channels, *row1 = coarse + y1 * coarse_w * channels;
        const float *p = colour + y * colour_row;
        const float *a = alpha + y * alpha_row;
        float *o = out + y * width * channels;
        for (int64_t x = 0; x < width; ++x, p += colour_pixel, a += alpha_pixel, o += channels) {
            float sx = ((float)x + 0.5f) * 0.5f - 0.5f;
            sx = sx > 0.0f ? sx : 0.0f;
            const int64_t x0 = (int64_t)sx, x1 = x0 + 1 < coarse_w ? x0 + 1 : coarse_w - 1;
            const float lx = sx - (float)x0;
            const float *a00 = row0 + x0 * channels, *a01 = row0 + x1 * channels;
            const float *a10 = row1 + x0 * channels, *a11 = row1 + x1 * channels;
            for (int64_t c = 0; c < channels; ++c) {
                const float top = a00[c] + lx * (a01[c] - a00[c]), bottom = a10[c] + lx * (a11[c] - a10[c]);
                const float up = top + ly * (bottom - top);
                o[c] = up + *a * (p[c] - up);
            }
        }
    }
}

void gdyn_push(const float *coarse, int64_t coarse_h, int64_t coarse_w,
               const float *colour, int64_t colour_row, int64_t colour_pixel,
               const float *alpha, int64_t alpha_row, int64_t alpha_pixel,
               int64_t height, int64_t width, int64_t channels, float *out) {
    switch (channels) {
    case 3: push(coarse, coarse_h, coarse_w, colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel,
                 height, width, 3, out); break;
    case 4: push(coarse, coarse_h, coarse_w, colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel,
                 height, width, 4, out); break;
    default: push(coarse, coarse_h, coarse_w, colour, colour_row, colour_pixel, alpha, alpha_row, alpha_pixel,
                  height, width, channels, out);
    }
}

/* exp(x) for x <= 0 within about 2 ulp, several times faster than the C library's expf (a
 * call per pixel there): range reduction by ln 2 and a degree-7 Taylor polynomial; below
 * -87 (where the result leaves the normal floats) the library's expf. */
static inline float exp_nonpositive(float x) {
    if (!(x > -87.0f)) return expf(x);
    const int32_t n = (int32_t)(x * 1.44269504f - 0.5f);  /* round(x / ln 2) for x <= 0 */
    const float r = (x - (float)n * 0.693145752f) - (float)n * 1.42860677e-06f;  /* |r| <= ln 2 / 2 */
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t bits; float value; } scale = {(n + 127) << 23};
    return p * scale.value;
}

static inline float unit(float v) { return v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; }

/* The default renderer's step between splat and fill, on padded sums of one image whose used
 * channels are (exp(Z) colour x colours, exp(Z) Z/sharpness, exp(Z), coverage): out holds
 * padded rows from row_offset on. For image rows 2*h0 .. 2*h1-1 (cut at height), in place:
 * the colour channels and Z/sharpness are divided by exp(Z) (at least FLT_MIN); the
 * confidence is clamp(coverage / full, 0, 1) and the fill's feed confidence *
 * exp(-background_bias * max(Z/sharpness, 0)). Written: the picture, image [H, W, colours]
 * clamped to 0..1 (final wherever the confidence is 1), confidence [H*W], holes [H*W] (1
 * where the confidence is below 1), and the fill's first pull step (gdyn_halve of the colours
 * weighted by the feed) for half rows h0..h1-1 into half [ceil(H/2), ceil(W/2), colours] and
 * half_alpha. Returns the number of pixels whose feed is 0 (none: nothing to fill). */
static inline int64_t normalize_rows(float *out, int64_t row_offset, int64_t height, int64_t width,
                                     const int64_t colours, float full, float background_bias, int64_t h0, int64_t h1,
                                     float *half, float *half_alpha, float *image, float *confidence, uint8_t *holes) {
    const int64_t pw = width + 2 * BORDER + 1, weight = colours + 1, half_w = (width + 1) / 2;
    const float per_full = 1.0f / full;
    int64_t starved = 0;
    for (int64_t hy = h0; hy < h1; ++hy) {
        const int64_t rows = 2 * hy + 1 < height ? 2 : 1;
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t y = 2 * hy + r;
            float *v = out + ((y + BORDER - row_offset) * pw + BORDER) * CHANNELS;
            float *picture = image + y * width * colours;
            for (int64_t x = 0; x < width; ++x, v += CHANNELS, picture += colours) {
                const float divisor = v[weight] > 1.17549435e-38f ? v[weight] : 1.17549435e-38f;
                const float inverse = 1.0f / divisor;
                for (int64_t c = 0; c < weight; ++c) v[c] *= inverse;
                for (int64_t c = 0; c < colours; ++c) picture[c] = unit(v[c]);
                const float trust = unit(v[weight + 1] * per_full);
                const float z = v[colours] > 0.0f ? v[colours] : 0.0f;
                const float feed = trust * exp_nonpositive(-background_bias * z);
                v[weight + 1] = feed;
                confidence[y * width + x] = trust;
                holes[y * width + x] = trust < 1.0f;
                starved += !(feed > 0.0f);
            }
        }
        for (int64_t hx = 0; hx < half_w; ++hx) {
            float sums[CHANNELS] = {0}, summed = 0.0f;
            for (int64_t r = 0; r < rows; ++r) {
                const float *v = out + ((2 * hy + r + BORDER - row_offset) * pw + BORDER + 2 * hx) * CHANNELS;
                for (int64_t dx = 0; dx < 2 && 2 * hx + dx < width; ++dx, v += CHANNELS) {
                    const float a = v[weight + 1];
                    for (int64_t c = 0; c < colours; ++c) sums[c] += v[c] * a;
                    summed += a;
                }
            }
            const float inverse = 1.0f / (summed > 1e-12f ? summed : 1e-12f);
            float *o = half + (hy * half_w + hx) * colours;
            for (int64_t c = 0; c < colours; ++c) o[c] = sums[c] * inverse;
            half_alpha[hy * half_w + hx] = summed > 1e-12f ? (summed < 1.0f ? summed : 1.0f) : 0.0f;
        }
    }
    return starved;
}

/* One strip of the default renderer's picture, image rows y0..y1-1 (y0 even), made in a
 * scratch buffer small enough to stay in the cache ([y1 - y0, PW, 8] floats): the splat's
 * sums of every source row that reaches the strip (reach: gdyn_source_rows), then
 * normalize_rows (its outputs, for these rows). Strips write disjoint parts of the outputs,
 * so they run on any threads in any order. Returns the strip's count of zero feeds. */
static inline int64_t render_strip(const float *flow_x, const float *flow_y, const float *values,
                                   const int64_t *reach, int64_t height, int64_t width, int64_t y0, int64_t y1,
                                   float *scratch, const int64_t colours, float full, float background_bias,
                                   float *image, float *confidence, uint8_t *holes, float *half, float *half_alpha) {
    const int64_t pw = width + 2 * BORDER + 1, first = y0 + BORDER, rows = y1 - y0;
    memset(scratch, 0, (size_t)(rows * pw * CHANNELS) * sizeof(float));
    for (int64_t y = 0; y < height; ++y)
        if (reach[2 * y + 1] > first && reach[2 * y] < first + rows)
            splat_rows(flow_x, flow_y, values, height, width, y, y + 1, scratch, first, rows);
    return normalize_rows(scratch, first, height, width, colours, full, background_bias, y0 / 2, (y1 + 1) / 2,
                          half, half_alpha, image, confidence, holes);
}

WIDEST_SIMD
int64_t gdyn_render_strip(const float *flow_x, const float *flow_y, const float *values, const int64_t *reach,
                          int64_t height, int64_t width, int64_t y0, int64_t y1, float *scratch, int64_t colours,
                          float full, float background_bias, float *image, float *confidence, uint8_t *holes,
                          float *half, float *half_alpha) {
    switch (colours) {
    case 3: return render_strip(flow_x, flow_y, values, reach, height, width, y0, y1, scratch, 3, full,
                                background_bias, image, confidence, holes, half, half_alpha);
    case 4: return render_strip(flow_x, flow_y, values, reach, height, width, y0, y1, scratch, 4, full,
                                background_bias, image, confidence, holes, half, half_alpha);
    default: return render_strip(flow_x, flow_y, values, reach, height, width, y0, y1, scratch, colours, full,
                                 background_bias, image, confidence, holes, half, half_alpha);
    }
}

/* Bilinear tap positions of an output coordinate i on a 2x finer grid (torch's interpolate,
 * align_corners=False): the coarse indices i0, i1 and the weight of i1. */
static inline void taps(int64_t i, int64_t size, int64_t *i0, int64_t *i1, float *weight) {
    float s = ((float)i + 0.5f) * 0.5f - 0.5f;
    s = s > 0.0f ? s : 0.0f;
    *i0 = (int64_t)s;
    *i1 = *i0 + 1 < size ? *i0 + 1 : size - 1;
    *weight = s - (float)*i0;
}

/* The first pull level's filled value at (y, x), channel c: lerp(up(second), first, alpha)
 * as gdyn_push computes it, or the first level's own colour when second is NULL. */
static inline float first_filled(const float *first, const float *first_alpha, int64_t first_w,
                                 const float *second, int64_t second_h, int64_t second_w,
                                 int64_t y, int64_t x, int64_t colours, int64_t c) {
    const float own = first[(y * first_w + x) * colours + c];
    if (!second) return own;
    int64_t y0, y1, x0, x1;
    float ly, lx;
    taps(y, second_h, &y0, &y1, &ly);
    taps(x, second_w, &x0, &x1, &lx);
    const float a00 = second[(y0 * second_w + x0) * colours + c], a01 = second[(y0 * second_w + x1) * colours + c];
    const float a10 = second[(y1 * second_w + x0) * colours + c], a11 = second[(y1 * second_w + x1) * colours + c];
    const float top = a00 + lx * (a01 - a00), bottom = a10 + lx * (a11 - a10);
    const float up = top + ly * (bottom - top);
    return up + first_alpha[y * first_w + x] * (own - up);
}

/* The fill's last step at the hole pixels only (holes.push_pull_fill): for each flat index
 * pixels[k] = y * W + x, fill = the first level, filled (first_filled), bilinearly upsampled
 * to (y, x); where has_sample[k], samples[k] [colours] replaces it (a stretch sample); the
 * picture image [H, W, colours] there becomes clamp(lerp(fill, picture, confidence)). */
void gdyn_fill_holes(const float *confidence, int64_t height, int64_t width, int64_t colours,
                     const int64_t *pixels, int64_t count, const uint8_t *has_sample, const float *samples,
                     const float *first, const float *first_alpha, int64_t first_h, int64_t first_w,
                     const float *second, int64_t second_h, int64_t second_w, float *image) {
    (void)height;
    for (int64_t k = 0; k < count; ++k) {
        const int64_t y = pixels[k] / width, x = pixels[k] % width;
        const float trust = confidence[pixels[k]];
        int64_t y0, y1, x0, x1;
        float ly, lx;
        taps(y, first_h, &y0, &y1, &ly);
        taps(x, first_w, &x0, &x1, &lx);
        float *picture = image + (y * width + x) * colours;
        for (int64_t c = 0; c < colours; ++c) {
            float fill;
            if (has_sample && has_sample[k]) {
                fill = samples[k * colours + c];
            } else {
                const float a00 = first_filled(first, first_alpha, first_w, second, second_h, second_w, y0, x0, colours, c);
                const float a01 = first_filled(first, first_alpha, first_w, second, second_h, second_w, y0, x1, colours, c);
                const float a10 = first_filled(first, first_alpha, first_w, second, second_h, second_w, y1, x0, colours, c);
                const float a11 = first_filled(first, first_alpha, first_w, second, second_h, second_w, y1, x1, colours, c);
                const float top = a00 + lx * (a01 - a00), bottom = a10 + lx * (a11 - a10);
                fill = top + ly * (bottom - top);
            }
            picture[c] = unit(fill + trust * (picture[c] - fill));
        }
    }
}

/* What the strips need to know of source rows r0..r1-1, in one pass over the flow:
 * reach[2y], reach[2y+1], the padded output rows row y reaches (as gdyn_band_rows gives them),
 * and the stretch candidates (holes.stretch_samples) of the source cells (y, x), 2x2
 * pixels, of those rows (below H-1): cells [(H-1) * (W-1)] gets 1 where one of the cell's
 * four edges lands longer than stretch_min pixels, else 0 (NaN: 0). */
void gdyn_source_rows(const float *flow_x, const float *flow_y, int64_t height, int64_t width, float stretch_min,
                      int64_t r0, int64_t r1, int64_t *reach, uint8_t *cells) {
    const float limit = stretch_min * stretch_min;
    for (int64_t y = r0; y < r1; ++y) {
        gdyn_band_rows(flow_y, height, width, y, y + 1, reach + 2 * y);
        if (y + 1 >= height) continue;
        const float *ax = flow_x + y * width, *ay = flow_y + y * width;    /* row y */
        const float *bx = ax + width, *by = ay + width;                    /* row y + 1 */
        uint8_t *out = cells + y * (width - 1);
        for (int64_t x = 0; x + 1 < width; ++x) {
            const float top_along = ax[x + 1] - ax[x] + 1.0f, top_across = ay[x + 1] - ay[x];
            const float bottom_along = bx[x + 1] - bx[x] + 1.0f, bottom_across = by[x + 1] - by[x];
            const float left_along = by[x] - ay[x] + 1.0f, left_across = bx[x] - ax[x];
            const float right_along = by[x + 1] - ay[x + 1] + 1.0f, right_across = bx[x + 1] - ax[x + 1];
            out[x] = (top_along * top_along + top_across * top_across > limit)
                   | (bottom_along * bottom_along + bottom_across * bottom_across > limit)
                   | (left_along * left_along + left_across * left_across > limit)
                   | (right_along * right_along + right_across * right_across > limit);
        }
    }
}

/* The stretch fill (holes.stretch_samples) for one image: every candidate cell (cells, from
 * gdyn_source_rows) whose longest landing edge is at most `tear` pixels and which is not
 * folded is rasterized; each hole pixel inside it (holes [H*W]; pixels [count], their flat
 * indices, ascending) gets the source's channels at the exact source point (inverse
 * bilinear map by newton_steps Newton steps from the cell's centre), weighted by exp(Z):
 * sums [count, colours + 1] (zeroed by the caller) gains (exp(Z) colour..., exp(Z)) there.
 * values: the packed source [H*W, 8] (exp(Z) colour..., exp(Z) Z/sharpness, exp(Z), 1). */
void gdyn_stretch_sums(const float *flow_x, const float *flow_y, const float *values, int64_t height, int64_t width,
                       int64_t colours, const uint8_t *cells, const uint8_t *holes, const int64_t *pixels,
                       int64_t count, float stretch_min, float tear, int64_t newton_steps, float *sums) {
    const int64_t weight = colours + 1;  /* exp(Z) in values */
    for (int64_t cy = 0; cy + 1 < height; ++cy) {
        for (int64_t cx = 0; cx + 1 < width; ++cx) {
            if (!cells[cy * (width - 1) + cx]) continue;
            const int64_t p00 = cy * width + cx, p10 = p00 + 1, p01 = p00 + width, p11 = p01 + 1;
            const float t00x = flow_x[p00] + (float)cx, t00y = flow_y[p00] + (float)cy;
            const float t10x = flow_x[p10] + (float)(cx + 1), t10y = flow_y[p10] + (float)cy;
            const float t01x = flow_x[p01] + (float)cx, t01y = flow_y[p01] + (float)(cy + 1);
            const float t11x = flow_x[p11] + (float)(cx + 1), t11y = flow_y[p11] + (float)(cy + 1);
            const float edges[4][2] = {{t10x - t00x, t10y - t00y}, {t11x - t01x, t11y - t01y},
                                       {t01x - t00x, t01y - t00y}, {t11x - t10x, t11y - t10y}};
            float longest = 0.0f;
            for (int e = 0; e < 4; ++e) {
                const float length = sqrtf(edges[e][0] * edges[e][0] + edges[e][1] * edges[e][1]);
                longest = length > longest ? length : longest;
            }
            if (!(longest > stretch_min && longest <= tear)) continue;
            /* P(u, v) = t00 + eu u + ev v + ec u v is one-to-one on the cell when its Jacobian
             * determinant is positive at the four corners. */
            const float eux = t10x - t00x, euy = t10y - t00y, evx = t01x - t00x, evy = t01y - t00y;
            const float ecx = t11x - t10x - t01x + t00x, ecy = t11y - t10y - t01y + t00y;
#define CROSS(ax, ay, bx, by) ((ax) * (by) - (ay) * (bx))
            if (!(CROSS(eux, euy, evx, evy) > 0.0f && CROSS(eux, euy, evx + ecx, evy + ecy) > 0.0f
                  && CROSS(eux + ecx, euy + ecy, evx, evy) > 0.0f
                  && CROSS(eux + ecx, euy + ecy, evx + ecx, evy + ecy) > 0.0f)) continue;
#undef CROSS
            const float min_x = fminf(fminf(t00x, t10x), fminf(t01x, t11x));
            const float max_x = fmaxf(fmaxf(t00x, t10x), fmaxf(t01x, t11x));
            const float min_y = fminf(fminf(t00y, t10y), fminf(t01y, t11y));
            const float max_y = fmaxf(fmaxf(t00y, t10y), fmaxf(t01y, t11y));
            const int64_t x0 = (int64_t)floorf(min_x), x1 = (int64_t)floorf(max_x);
            const int64_t y0 = (int64_t)floorf(min_y), y1 = (int64_t)floorf(max_y);
            for (int64_t qy = y0 < 0 ? 0 : y0; qy <= y1 && qy < height; ++qy) {
                for (int64_t qx = x0 < 0 ? 0 : x0; qx <= x1 && qx < width; ++qx) {
                    const int64_t q = qy * width + qx;
                    if (!holes[q]) continue;
                    float u = 0.5f, v = 0.5f, rx = 0.0f, ry = 0.0f;
                    for (int64_t step = 0; step <= newton_steps; ++step) {
                        rx = t00x + eux * u + evx * v + ecx * (u * v) - (float)qx;
                        ry = t00y + euy * u + evy * v + ecy * (u * v) - (float)qy;
                        if (step == newton_steps) break;
                        const float dux = eux + ecx * v, duy = euy + ecy * v;  /* columns of the Jacobian */
                        const float dvx = evx + ecx * u, dvy = evy + ecy * u;
                        float det = dux * dvy - duy * dvx;
                        det = det > 1e-6f ? det : 1e-6f;
                        const float du = (dvy * rx - dvx * ry) / det, dv = (dux * ry - duy * rx) / det;
                        u -= du;
                        v -= dv;
                    }
                    if (!(u >= -1e-4f && u <= 1.0f + 1e-4f && v >= -1e-4f && v <= 1.0f + 1e-4f
                          && fabsf(rx) < 1e-3f && fabsf(ry) < 1e-3f)) continue;
                    u = u < 0.0f ? 0.0f : (u > 1.0f ? 1.0f : u);
                    v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
                    /* the hole's slot: binary search in the ascending pixels */
                    int64_t lo = 0, hi = count;
                    while (lo < hi) {
                        const int64_t mid = (lo + hi) / 2;
                        if (pixels[mid] < q) lo = mid + 1; else hi = mid;
                    }
                    if (lo == count || pixels[lo] != q) continue;
                    float *sum = sums + lo * (colours + 1);
                    const float *a = values + p00 * CHANNELS, *b = values + p10 * CHANNELS;
                    const float *c = values + p01 * CHANNELS, *d = values + p11 * CHANNELS;
                    for (int64_t k = 0; k <= colours; ++k) {
                        const int64_t channel = k < colours ? k : weight;
                        const float top = a[channel] + u * (b[channel] - a[channel]);
                        const float bottom = c[channel] + u * (d[channel] - c[channel]);
                        sum[k] += top + v * (bottom - top);
                    }
                }
            }
        }
    }
}
