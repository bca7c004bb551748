/* gdyn's native EXR writer: the scanline chunks of a displacement map's RLE-compressed OpenEXR file.
 *
 * Built into the same library as splat_kernel.c (gdyn_backend/render/native.py)
 * and called by gdyn_backend/io.py `write_displacement_exr`, which writes the
 * header and the chunk offset table around these chunks. OpenCV's EXR writer
 * (the portable path) takes 0.48 s of one core for a 3840x2160 map and only
 * writes 1, 3 or 4 channels; this codes the two channels in 0.1 s (0.13 s with the file).
 *
 * The file has two float32 channels in OpenEXR's alphabetical order, G (= y)
 * then R (= x), and one scanline per chunk (RLE_COMPRESSION). A chunk is
 * int32 y, int32 data size, then the data: the scanline's bytes (G's w floats,
 * then R's, little-endian) reordered (even bytes, then odd bytes), each byte
 * replaced by its difference to the one before plus 128 (mod 256), and
 * run-length coded: a count byte c >= 0 means c + 1 copies of the next byte,
 * c < 0 means -c literal bytes follow. Where that is not smaller than the
 * scanline's 8w bytes, the chunk holds those bytes as they are (OpenEXR reads
 * a chunk of the uncompressed size as uncompressed).
 */
#include <stdint.h>
#include <string.h>

#define LONGEST_RUN 128     /* copies one count byte can say (c = 127) */
#define LONGEST_LITERAL 127 /* literal bytes one count byte can say (c = -127) */

/* Run-length code `in` [n] into `out`; the coded size, or -1 as soon as it would reach `limit` bytes. */
static int64_t run_length_code(const uint8_t *in, int64_t n, uint8_t *out, int64_t limit) {
    int64_t i = 0, o = 0;
    while (i < n) {
        int64_t j = i + 1;
        while (j < n && in[j] == in[i] && j - i < LONGEST_RUN)
            j++;
        if (j - i >= 3) {
            if (o + 2 >= limit)
                return -1;
            out[o++] = (uint8_t)(j - i - 1);
            out[o++] = in[i];
        } else { /* literal bytes until a run of three begins */
            j = i + 1;
            while (j < n && j - i < LONGEST_LITERAL && !(j + 2 < n && in[j] == in[j + 1] && in[j] == in[j + 2]))
                j++;
            if (o + 1 + (j - i) >= limit)
                return -1;
            out[o++] = (uint8_t)(int8_t)(-(j - i));
            memcpy(out + o, in + i, (size_t)(j - i));
            o += j - i;
        }
        i = j;
    }
    return o;
}

/* The chunks of an RLE EXR of the map x, y [h, w] float32 (row-major, pixels).
 * out: capacity h * (8 + 8w) bytes; chunk r is written at out + offsets[r].
 * scratch: 16w bytes. Returns the bytes written to out. Assumes a little-endian
 * machine (io.py checks). */
int64_t gdyn_exr_rle_chunks(const float *x, const float *y, int64_t h, int64_t w, uint8_t *out, int64_t *offsets,
                            uint8_t *scratch) {
    const int64_t n = 8 * w, half = n / 2;
    uint8_t *raw = scratch, *coded = scratch + n;
    int64_t at = 0;
    for (int64_t r = 0; r < h; r++) {
        memcpy(raw, y + r * w, (size_t)(4 * w));
        memcpy(raw + 4 * w, x + r * w, (size_t)(4 * w));
        for (int64_t k = 0; k < half; k++) { /* even bytes, then odd bytes */
            coded[k] = raw[2 * k];
            coded[half + k] = raw[2 * k + 1];
        }
        for (int64_t k = n - 1; k > 0; k--) /* differences, from the end: coded[k - 1] is still the byte */
            coded[k] = (uint8_t)(coded[k] - coded[k - 1] + 128);
        uint8_t *chunk = out + at;
        int64_t size = run_length_code(coded, n, chunk + 8, n);
        if (size < 0) { /* not smaller: the scanline as it is */
            memcpy(chunk + 8, raw, (size_t)n);
            size = n;
        }
        int32_t head[2] = {(int32_t)r, (int32_t)size};
        memcpy(chunk, head, sizeof head);
        offsets[r] = at;
        at += 8 + size;
    }
    return at;
}
