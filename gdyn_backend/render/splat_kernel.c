/* Softmax splatting's sums in one pass over the sources: gdyn's native CPU kernel.
 *
 * Built on first use by gdyn_backend/render/native.py with the machine's C
 * compiler and loaded with ctypes (no Python headers, no torch headers); where
 * no compiler works, gdyn sums with scipy.sparse instead (same result, slower).
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

/* Adds the sums of source rows r0..r1-1 to out ([out_rows, PW, 8], first row out_row0).
 * Returns the number of sources that fell outside out's rows (0 when out_row0 and
 * out_rows come from gdyn_band_rows): those are skipped, never written. */
WIDEST_SIMD
int64_t gdyn_splat_band(const float *restrict flow_x, const float *restrict flow_y,
                        const float *restrict values, int64_t height, int64_t width, int64_t r0, int64_t r1,
                        float *restrict out, int64_t out_row0, int64_t out_rows) {
    const int64_t pw = width + 2 * BORDER + 1, row_lanes = 2 * pw;
    const float right = (float)(width + BORDER - 1), bottom = (float)(height + BORDER - 1);
    int64_t skipped = 0;
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
            if (row < 0 || row + 2 > out_rows) {
                ++skipped;
                continue;
            }
            const lanes_u *v = (const lanes_u *)(values + p * CHANNELS);
            const lanes v0 = v[0], v1 = v[1];
            const lanes top0 = v0 * (1.0f - fy), top1 = v1 * (1.0f - fy);
            const lanes bottom0 = v0 * fy, bottom1 = v1 * fy;
            lanes left_top0 = top0 * (1.0f - fx), left_top1 = top1 * (1.0f - fx);
            lanes left_bottom0 = bottom0 * (1.0f - fx), left_bottom1 = bottom1 * (1.0f - fx);
            lanes_u *o = (lanes_u *)(out + (row * pw + (int64_t)x0 + BORDER) * CHANNELS);
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
    return skipped;
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

/* The default renderer's step between splat and fill, on the padded sums out [PH, PW, 8] of
 * one image whose used channels are (exp(Z) colour x colours, exp(Z) Z/sharpness, exp(Z),
 * coverage), used = colours + 3. In place, for output rows 2*h0 .. 2*h1-1 (cut at height):
 * the colour channels and Z/sharpness are divided by exp(Z) (at least FLT_MIN), exp(Z) is
 * replaced by the confidence clamp(coverage / full, 0, 1) and coverage by the fill's feed,
 * confidence * exp(-background_bias * max(Z/sharpness, 0)). At the same time the first pull
 * step of the fill (gdyn_halve of the colours, weighted by the feed) is written for half rows
 * h0..h1-1 into half [ceil(H/2), ceil(W/2), colours] and half_alpha. Returns the number of
 * pixels whose feed is 0 (none: nothing to fill). */
static inline int64_t normalize_rows(float *out, int64_t height, int64_t width, const int64_t colours, float full,
                                     float background_bias, int64_t h0, int64_t h1, float *half, float *half_alpha) {
    const int64_t pw = width + 2 * BORDER + 1, weight = colours + 1, half_w = (width + 1) / 2;
    int64_t starved = 0;
    for (int64_t hy = h0; hy < h1; ++hy) {
        const int64_t rows = 2 * hy + 1 < height ? 2 : 1;
        for (int64_t r = 0; r < rows; ++r) {
            float *v = out + ((2 * hy + r + BORDER) * pw + BORDER) * CHANNELS;
            for (int64_t x = 0; x < width; ++x, v += CHANNELS) {
                const float divisor = v[weight] > 1.17549435e-38f ? v[weight] : 1.17549435e-38f;
                const float inverse = 1.0f / divisor;
                for (int64_t c = 0; c < weight; ++c) v[c] *= inverse;
                float confidence = v[weight + 1] / full;
                confidence = confidence > 0.0f ? (confidence < 1.0f ? confidence : 1.0f) : 0.0f;
                const float z = v[colours] > 0.0f ? v[colours] : 0.0f;
                v[weight] = confidence;
                v[weight + 1] = confidence * expf(-background_bias * z);
                starved += !(v[weight + 1] > 0.0f);
            }
        }
        for (int64_t hx = 0; hx < half_w; ++hx) {
            float sums[CHANNELS] = {0}, summed = 0.0f;
            for (int64_t r = 0; r < rows; ++r) {
                const float *v = out + ((2 * hy + r + BORDER) * pw + BORDER + 2 * hx) * CHANNELS;
                for (int64_t dx = 0; dx < 2 && 2 * hx + dx < width; ++dx, v += CHANNELS) {
                    const float a = v[weight + 1];
                    for (int64_t c = 0; c < colours; ++c) sums[c] += v[c] * a;
                    summed += a;
                }
            }
            const float divisor = summed > 1e-12f ? summed : 1e-12f;
            float *o = half + (hy * half_w + hx) * colours;
            for (int64_t c = 0; c < colours; ++c) o[c] = sums[c] / divisor;
            half_alpha[hy * half_w + hx] = summed > 1e-12f ? (summed < 1.0f ? summed : 1.0f) : 0.0f;
        }
    }
    return starved;
}

int64_t gdyn_normalize(float *out, int64_t height, int64_t width, int64_t colours, float full, float background_bias,
                       int64_t h0, int64_t h1, float *half, float *half_alpha) {
    switch (colours) {
    case 3: return normalize_rows(out, height, width, 3, full, background_bias, h0, h1, half, half_alpha);
    case 4: return normalize_rows(out, height, width, 4, full, background_bias, h0, h1, half, half_alpha);
    default: return normalize_rows(out, height, width, colours, full, background_bias, h0, h1, half, half_alpha);
    }
}
