//! The Linear layer's forward product `x·W + b`, written straight into a new
//! buffer.
//!
//! `flex` computes a Linear layer as a matrix product into a tensor it first
//! fills with zeros and then copies to re-align (`FlexTensor::empty`), and adds
//! the bias in a second op: at 16 clips of `small`, the zero fill and the copy
//! were 7% of sampling. Here the product is the same `gemm` call with the same
//! threading rule, so the result has the same bits, and the bias is added to
//! each row of the product in place.

/// Products of at least this many multiply-adds are split across rayon's
/// threads inside `gemm`: `flex`'s rule for a 2-D product, kept so that the
/// threading, and with it every bit, is what `flex`'s matmul gives.
const THREADED_PRODUCT: usize = 192 * 192 * 192;

/// `y = x·W + b` for `x [rows, d_in]`, `W [d_in, d_out]` and `b [d_out]`,
/// all row-major and contiguous; `y` is `[rows, d_out]`. (A layer without a
/// bias never comes here: `fused::linear` gives it to `Linear::forward`.)
pub fn linear(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    [rows, d_in, d_out]: [usize; 3],
) -> Vec<f32> {
    assert_eq!(x.len(), rows * d_in, "linear: input size");
    assert_eq!(weight.len(), d_in * d_out, "linear: weight size");
    assert_eq!(bias.len(), d_out, "linear: bias size");
    let len = rows * d_out;
    let mut y = if d_in == 0 {
        // No products to sum: gemm would leave the output unwritten.
        vec![0.0f32; len]
    } else {
        let mut y = Vec::with_capacity(len);
        let threads = if rows.saturating_mul(d_out).saturating_mul(d_in) >= THREADED_PRODUCT {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: the three matrices are in bounds by the asserts above (row
        // strides d_in, d_out and d_out, column stride 1); with `read_dst`
        // false and alpha 0, gemm writes every element of the `rows × d_out`
        // output without reading it, so all `len` elements are initialised
        // before `set_len`.
        unsafe {
            gemm::gemm(
                rows,
                d_out,
                d_in,
                y.as_mut_ptr(),
                1,
                d_out as isize,
                false,
                x.as_ptr(),
                1,
                d_in as isize,
                weight.as_ptr(),
                1,
                d_out as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                threads,
            );
            y.set_len(len);
        }
        y
    };
    for row in y.chunks_exact_mut(d_out.max(1)) {
        for (value, b) in row.iter_mut().zip(bias) {
            *value += b;
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_product_has_its_closed_form() {
        // x [2, 3] · W [3, 2] + b: rows (1, 2, 3) and (4, 5, 6), W = [[1, 0], [0, 1], [1, 1]].
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let weight = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let y = linear(&x, &weight, &[0.5, -1.0], [2, 3, 2]);
        assert_eq!(y, vec![4.5, 4.0, 10.5, 10.0]);
    }

    #[test]
    fn no_inputs_give_the_bias_in_every_row() {
        let y = linear(&[], &[], &[0.25, -2.0], [3, 0, 2]);
        assert_eq!(y, vec![0.25, -2.0, 0.25, -2.0, 0.25, -2.0]);
    }
}
