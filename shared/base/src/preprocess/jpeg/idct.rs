//! libjpeg's accurate integer inverse DCT (`jpeg_idct_islow`, the default `JDCT_ISLOW`).
//!
//! Loeffler–Ligtenberg–Moschytz with 13-bit constants; the column pass keeps 2 extra bits
//! (`PASS1_BITS`), the row pass descales by 2^18 and maps through libjpeg's wrapping range-limit
//! table (the result is masked to 10 bits before clamping, so corrupt coefficients wrap as they
//! do in libjpeg). libjpeg-turbo's SIMD versions give the same bytes.

use super::Component;

const CONST_BITS: u32 = 13;
const PASS1_BITS: u32 = 2;

const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

fn descale(x: i64, n: u32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// libjpeg's post-IDCT `range_limit[x & RANGE_MASK]` with the +128 level shift folded in.
fn range_limit(x: i64) -> u8 {
    match x & 1023 {
        i @ 0..=127 => (i + 128) as u8,
        128..=511 => 255,
        512..=895 => 0,
        i => (i - 896) as u8,
    }
}

/// The 1-D kernel shared by both passes: inputs 0..8 (already scaled for the pass), outputs
/// before the final descale, in the order 0..8.
fn kernel(x: [i64; 8]) -> [i64; 8] {
    let (z2, z3) = (x[2], x[6]);
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * -FIX_1_847759065;
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let (tmp10, tmp13, tmp11, tmp12) = (tmp0 + tmp3, tmp0 - tmp3, tmp1 + tmp2, tmp1 - tmp2);

    let (mut t0, mut t1, mut t2, mut t3) = (x[7], x[5], x[3], x[1]);
    let z1 = t0 + t3;
    let z2 = t1 + t2;
    let z3 = t0 + t2;
    let z4 = t1 + t3;
    let z5 = (z3 + z4) * FIX_1_175875602;
    t0 *= FIX_0_298631336;
    t1 *= FIX_2_053119869;
    t2 *= FIX_3_072711026;
    t3 *= FIX_1_501321110;
    let z1 = z1 * -FIX_0_899976223;
    let z2 = z2 * -FIX_2_562915447;
    let z3 = z3 * -FIX_1_961570560 + z5;
    let z4 = z4 * -FIX_0_390180644 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    [
        tmp10 + t3,
        tmp11 + t2,
        tmp12 + t1,
        tmp13 + t0,
        tmp13 - t0,
        tmp12 - t1,
        tmp11 - t2,
        tmp10 - t3,
    ]
}

/// Dequantise and inverse-transform one block into `out` (8 rows of `stride`).
fn block(coefficients: &[i16], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    let mut workspace = [0i32; 64];
    for column in 0..8 {
        // libjpeg's multiplier table is `short`: a 16-bit quantiser above 32767 wraps.
        let input: [i64; 8] = std::array::from_fn(|row| {
            i64::from(coefficients[row * 8 + column]) * i64::from(quant[row * 8 + column] as i16)
        });
        if input[1..].iter().all(|&v| v == 0) {
            let dc = (input[0] << PASS1_BITS) as i32;
            for row in 0..8 {
                workspace[row * 8 + column] = dc;
            }
            continue;
        }
        let result = kernel(input);
        for row in 0..8 {
            workspace[row * 8 + column] = descale(result[row], CONST_BITS - PASS1_BITS) as i32;
        }
    }
    for row in 0..8 {
        let input: [i64; 8] = std::array::from_fn(|i| i64::from(workspace[row * 8 + i]));
        let line = &mut out[row * stride..][..8];
        if input[1..].iter().all(|&v| v == 0) {
            line.fill(range_limit(descale(input[0], PASS1_BITS + 3)));
            continue;
        }
        let result = kernel(input);
        for (value, r) in line.iter_mut().zip(result) {
            *value = range_limit(descale(r, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

/// Every block of a component, as a plane of `blocks_w · 8` samples by `blocks_h · 8` rows.
pub(super) fn component_plane(component: &Component, coefficients: &[i16]) -> Vec<u8> {
    let quant = component
        .quant
        .as_ref()
        .expect("every component has a latched table once decoding succeeded");
    let stride = component.blocks_w * 8;
    let mut plane = vec![0u8; stride * component.blocks_h * 8];
    for (index, block_coefficients) in coefficients.chunks_exact(64).enumerate() {
        let (by, bx) = (index / component.blocks_w, index % component.blocks_w);
        block(
            block_coefficients,
            quant,
            &mut plane[by * 8 * stride + bx * 8..],
            stride,
        );
    }
    plane
}
