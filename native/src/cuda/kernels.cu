// The CUDA device's own kernels, compiled at run time by NVRTC (see kernels.rs).
//
// Every tensor is a batch of NHWC maps (or N x F vectors), contiguous, indexed with 64-bit
// integers (a batch of 1024 MobileNetV2 expansions is 1.2e9 floats). The hot kernels run on
// per-channel grids (below); the rest walk their output with a grid-stride loop, one thread per
// element, channels fastest so that neighbouring threads touch neighbouring addresses. Activation codes match `Act` in the lowered plan:
// 0 none, 1 relu, 2 clip(p0, p1), 3 sigmoid, 4 hard sigmoid(alpha p0, beta p1), 5 hard swish,
// 6 leaky relu(alpha p0).

typedef long long i64;

#define GRID_STRIDE(i, total) \
    for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (total); \
         i += (i64)blockDim.x * gridDim.x)

__device__ __forceinline__ float activate(float x, int act, float p0, float p1) {
    switch (act) {
    case 1: return fmaxf(x, 0.0f);
    case 2: return fminf(fmaxf(x, p0), p1);
    case 3: return 1.0f / (1.0f + expf(-x));
    case 4: return fminf(fmaxf(p0 * x + p1, 0.0f), 1.0f);
    case 5: return x * fminf(fmaxf(x / 6.0f + 0.5f, 0.0f), 1.0f);
    case 6: return x < 0.0f ? p0 * x : x;
    default: return x;
    }
}

// The hot kernels below avoid integer division, which costs tens of instructions per value on
// the GPU (64-bit division ~100: it made the first versions of these kernels take half of
// MobileNetV2's time). They run on a grid of channel blocks (x) by pixels or rows (y) by images
// (z): threadIdx.x walks channels, so a warp reads 32 neighbouring floats, and each thread keeps
// its channel's bias and weights while it steps over pixels.

// y[n][j][i] = x[n][i][j] for n images of rows x cols: grid (col blocks, row blocks, images).
extern "C" __global__ void transpose_batch(const float* __restrict__ x, float* __restrict__ y,
                                           int rows, int cols) {
    i64 base = (i64)blockIdx.z * rows * cols;
    int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= cols) return;
    for (int row = blockIdx.y * blockDim.y + threadIdx.y; row < rows; row += gridDim.y * blockDim.y)
        y[base + (i64)col * rows + row] = x[base + (i64)row * cols + col];
}

// y = act(a * scale[c] + shift[c] + b): BatchNormalization alone (scale, shift), Add (b), an
// activation alone (neither). scale, shift and b may be null. Grid as `epilogue`.
extern "C" __global__ void pointwise(const float* __restrict__ a, const float* __restrict__ b,
                                     const float* __restrict__ scale,
                                     const float* __restrict__ shift, float* __restrict__ y,
                                     i64 pixels, int c, int act, float p0, float p1) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    float s = scale ? scale[ch] : 1.0f, t = shift ? shift[ch] : 0.0f;
    for (i64 p = (i64)blockIdx.y * blockDim.y + threadIdx.y; p < pixels;
         p += (i64)gridDim.y * blockDim.y) {
        i64 i = p * c + ch;
        float v = a[i] * s + t;
        if (b) v += b[i];
        y[i] = activate(v, act, p0, p1);
    }
}

// A direct convolution with the epilogue fused, for convolutions cuDNN cannot express
// (asymmetric padding that changes the output size, e.g. a TF-SAME stem). Weights in the
// lowered plan's layout [group][ky][kx][ci][co_g]. Grid (output channel blocks, output rows,
// images); threadIdx.y steps over the row's columns.
extern "C" __global__ void direct_conv(const float* __restrict__ x, const float* __restrict__ w,
                                       const float* __restrict__ bias,
                                       const float* __restrict__ residual,
                                       float* __restrict__ y, int h, int wd, int cin, int oh,
                                       int ow, int cout, int groups, int kh, int kw, int sh,
                                       int sw, int dh, int dw, int pt, int pl, int act, float p0,
                                       float p1) {
    int co = blockIdx.x * blockDim.x + threadIdx.x;
    if (co >= cout) return;
    int oy = blockIdx.y;
    i64 image = blockIdx.z;
    int cin_g = cin / groups, cout_g = cout / groups;
    int g = co / cout_g, o = co - g * cout_g;
    const float* xi = x + image * h * wd * cin + g * cin_g;
    float b = bias[co];
    for (int ox = threadIdx.y; ox < ow; ox += blockDim.y) {
        float sum = 0.0f;
        for (int ky = 0; ky < kh; ++ky) {
            int iy = oy * sh + ky * dh - pt;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int ix = ox * sw + kx * dw - pl;
                if (ix < 0 || ix >= wd) continue;
                const float* xp = xi + ((i64)iy * wd + ix) * cin;
                const float* wp = w + ((((i64)g * kh + ky) * kw + kx) * cin_g) * cout_g + o;
                for (int ci = 0; ci < cin_g; ++ci) sum += xp[ci] * wp[(i64)ci * cout_g];
            }
        }
        i64 i = ((image * oh + oy) * ow + ox) * cout + co;
        sum += b;
        if (residual) sum += residual[i];
        y[i] = activate(sum, act, p0, p1);
    }
}

// Four channels per thread where c % 4 == 0 (every tensor is 16-byte aligned): one 16-byte load
// or store where one channel per thread makes four. The templates below run on `float` (one
// channel) and `float4` (four; `c` then counts float4s); the `extern "C"` names are the entry
// points: `epilogue`/`epilogue4`, `depthwise`/`depthwise4`.
__device__ __forceinline__ float4 operator+(float4 a, float4 b) {
    return make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
}

__device__ __forceinline__ float4 operator*(float4 a, float4 b) {
    return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w);
}

__device__ __forceinline__ float4 activate(float4 v, int act, float p0, float p1) {
    return make_float4(activate(v.x, act, p0, p1), activate(v.y, act, p0, p1),
                       activate(v.z, act, p0, p1), activate(v.w, act, p0, p1));
}

template <typename V> __device__ __forceinline__ V zero();
template <> __device__ __forceinline__ float zero<float>() { return 0.0f; }
template <> __device__ __forceinline__ float4 zero<float4>() {
    return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

// y = act(y + bias[c] + residual) over `pixels` rows of c channels, in place after a cuDNN
// convolution or a cuBLAS product. bias and residual may be null. Grid (channel blocks, pixel
// blocks).
template <typename V>
__device__ void epilogue_of(V* __restrict__ y, const V* __restrict__ bias,
                            const V* __restrict__ residual, i64 pixels, int c, int act, float p0,
                            float p1) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    V b = bias ? bias[ch] : zero<V>();
    for (i64 p = (i64)blockIdx.y * blockDim.y + threadIdx.y; p < pixels;
         p += (i64)gridDim.y * blockDim.y) {
        i64 i = p * c + ch;
        V v = y[i] + b;
        if (residual) v = v + residual[i];
        y[i] = activate(v, act, p0, p1);
    }
}

// A depthwise convolution (one filter per channel, weights [ky][kx][c]) with the epilogue fused.
// Grid (channel blocks, output rows, images); threadIdx.y steps over the row's columns.
template <typename V>
__device__ void depthwise_of(const V* __restrict__ x, const V* __restrict__ w,
                             const V* __restrict__ bias, const V* __restrict__ residual,
                             V* __restrict__ y, int h, int wd, int c, int oh, int ow, int kh,
                             int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act,
                             float p0, float p1) {
    int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= c) return;
    int oy = blockIdx.y;
    i64 image = blockIdx.z;
    const V* xi = x + image * h * wd * c + ch;
    const V* wc = w + ch;
    V b = bias[ch];
    for (int ox = threadIdx.y; ox < ow; ox += blockDim.y) {
        V sum = zero<V>();
        for (int ky = 0; ky < kh; ++ky) {
            int iy = oy * sh + ky * dh - pt;
            if (iy < 0 || iy >= h) continue;
            for (int kx = 0; kx < kw; ++kx) {
                int ix = ox * sw + kx * dw - pl;
                if (ix < 0 || ix >= wd) continue;
                sum = sum + xi[((i64)iy * wd + ix) * c] * wc[(ky * kw + kx) * c];
            }
        }
        i64 i = ((image * oh + oy) * ow + ox) * c + ch;
        sum = sum + b;
        if (residual) sum = sum + residual[i];
        y[i] = activate(sum, act, p0, p1);
    }
}

#define EPILOGUE_ARGS(V)                                                                      \
    V* __restrict__ y, const V* __restrict__ bias, const V* __restrict__ residual, i64 pixels, \
        int c, int act, float p0, float p1
extern "C" __global__ void epilogue(EPILOGUE_ARGS(float)) {
    epilogue_of(y, bias, residual, pixels, c, act, p0, p1);
}
extern "C" __global__ void epilogue4(EPILOGUE_ARGS(float4)) {
    epilogue_of(y, bias, residual, pixels, c, act, p0, p1);
}

#define DEPTHWISE_ARGS(V)                                                                      \
    const V* __restrict__ x, const V* __restrict__ w, const V* __restrict__ bias,               \
        const V* __restrict__ residual, V* __restrict__ y, int h, int wd, int c, int oh, int ow, \
        int kh, int kw, int sh, int sw, int dh, int dw, int pt, int pl, int act, float p0,      \
        float p1
extern "C" __global__ void depthwise(DEPTHWISE_ARGS(float)) {
    depthwise_of(x, w, bias, residual, y, h, wd, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, act,
                 p0, p1);
}
extern "C" __global__ void depthwise4(DEPTHWISE_ARGS(float4)) {
    depthwise_of(x, w, bias, residual, y, h, wd, c, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, act,
                 p0, p1);
}

// Max (mode 0) or average (mode 1) pooling with top/left/bottom/right padding; padding never
// wins a max; an average divides by the window inside the padded input (include_pad) or by its
// in-bounds pixels.
extern "C" __global__ void pool(const float* __restrict__ x, float* __restrict__ y, int n, int h,
                                int wd, int c, int oh, int ow, int kh, int kw, int sh, int sw,
                                int pt, int pl, int pb, int pr, int mode, int include_pad) {
    i64 total = (i64)n * oh * ow * c;
    GRID_STRIDE(i, total) {
        int ch = (int)(i % c);
        i64 pixel = i / c;
        int ox = (int)(pixel % ow);
        i64 rest = pixel / ow;
        int oy = (int)(rest % oh);
        int image = (int)(rest / oh);
        int y0 = oy * sh - pt, x0 = ox * sw - pl;
        int y1 = min(y0 + kh, h), x1 = min(x0 + kw, wd);
        int ya = max(y0, 0), xa = max(x0, 0);
        float acc = mode == 0 ? -__int_as_float(0x7f800000) : 0.0f;
        for (int iy = ya; iy < y1; ++iy)
            for (int ix = xa; ix < x1; ++ix) {
                float v = x[(((i64)image * h + iy) * wd + ix) * c + ch];
                acc = mode == 0 ? fmaxf(acc, v) : acc + v;
            }
        if (mode == 1) {
            int count;
            if (include_pad) {
                int ye = min(y0 + kh, h + pb), xe = min(x0 + kw, wd + pr);
                count = max(ye - y0, 0) * max(xe - x0, 0);
            } else {
                count = max(y1 - ya, 0) * max(x1 - xa, 0);
            }
            acc /= (float)max(count, 1);
        }
        y[i] = acc;
    }
}

// y[n][c] = mean over the map's pixels.
extern "C" __global__ void global_average(const float* __restrict__ x, float* __restrict__ y,
                                          int n, int pixels, int c) {
    GRID_STRIDE(i, (i64)n * c) {
        i64 image = i / c;
        int ch = (int)(i % c);
        const float* xp = x + image * pixels * c + ch;
        float sum = 0.0f;
        for (int p = 0; p < pixels; ++p) sum += xp[(i64)p * c];
        y[i] = sum / (float)pixels;
    }
}

// One input's channels into its slice of a concatenation: y[p][offset + j] = x[p][j].
extern "C" __global__ void concat_slice(const float* __restrict__ x, float* __restrict__ y,
                                        i64 pixels, int width, int c, int offset) {
    GRID_STRIDE(i, pixels * width) {
        i64 p = i / width;
        int j = (int)(i % width);
        y[p * c + offset + j] = x[i];
    }
}

// ONNX LRN across channels.
extern "C" __global__ void lrn(const float* __restrict__ x, float* __restrict__ y, i64 pixels,
                               int c, int size, float alpha, float beta, float bias) {
    int below = (size - 1) / 2, above = size / 2;
    float scale = alpha / (float)size;
    GRID_STRIDE(i, pixels * c) {
        i64 p = i / c;
        int ch = (int)(i % c);
        int from = max(ch - below, 0), to = min(ch + above + 1, c);
        const float* xp = x + p * c;
        float square = 0.0f;
        for (int j = from; j < to; ++j) square += xp[j] * xp[j];
        y[i] = x[i] / powf(bias + scale * square, beta);
    }
}

// Softmax of each row; one block of 256 threads per row.
extern "C" __global__ void softmax(const float* __restrict__ x, float* __restrict__ y, int rows,
                                   int cols) {
    __shared__ float shared[256];
    for (int row = blockIdx.x; row < rows; row += gridDim.x) {
        const float* xr = x + (i64)row * cols;
        float* yr = y + (i64)row * cols;
        float m = -__int_as_float(0x7f800000);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, xr[j]);
        shared[threadIdx.x] = m;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s /= 2) {
            if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
            __syncthreads();
        }
        m = shared[0];
        __syncthreads();
        float sum = 0.0f;
        for (int j = threadIdx.x; j < cols; j += blockDim.x) {
            float e = expf(xr[j] - m);
            yr[j] = e;
            sum += e;
        }
        shared[threadIdx.x] = sum;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s /= 2) {
            if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
            __syncthreads();
        }
        float total = shared[0];
        __syncthreads();
        for (int j = threadIdx.x; j < cols; j += blockDim.x) yr[j] /= total;
    }
}

// LIME's samples composed on the device: image i takes `on` where row i of `keep` has the pixel's
// segment on, else `off`. on and off are C x H x W; y is the plan's N x H x W x C input. Grid
// (pixel blocks, 1, images).
extern "C" __global__ void compose(const float* __restrict__ on, const float* __restrict__ off,
                                   const unsigned int* __restrict__ segments,
                                   const unsigned char* __restrict__ keep, float* __restrict__ y,
                                   int c, int pixels, int count) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pixels) return;
    i64 image = blockIdx.z;
    const float* source = keep[image * count + segments[p]] ? on : off;
    float* yp = y + (image * pixels + p) * c;
    for (int ch = 0; ch < c; ++ch) yp[ch] = source[(i64)ch * pixels + p];
}

// Score-CAM's masks, as the host computes them (engine::Masked): each of k maps (h x w) upsampled
// to height x width with corner-aligned bilinear taps computed on the host, then scaled to
// [0, 1] by its own minimum and maximum. The arithmetic is the host's, operation for operation,
// without fused multiply-adds (the _rn intrinsics), so the masks are bit-identical.
// Grid (pixel blocks, 1, maps).
extern "C" __global__ void upsample_maps(const float* __restrict__ maps,
                                         const int* __restrict__ rows,
                                         const float* __restrict__ row_weights,
                                         const int* __restrict__ cols,
                                         const float* __restrict__ col_weights,
                                         float* __restrict__ masks, int h, int w, int height,
                                         int width) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= height * width) return;
    int y = p / width, x = p - y * width;
    const float* map = maps + (i64)blockIdx.z * h * w;
    int y0 = rows[2 * y], y1 = rows[2 * y + 1], x0 = cols[2 * x], x1 = cols[2 * x + 1];
    float wy = row_weights[y], wx = col_weights[x];
    float top = __fadd_rn(__fmul_rn(map[y0 * w + x0], __fsub_rn(1.0f, wx)),
                          __fmul_rn(map[y0 * w + x1], wx));
    float bottom = __fadd_rn(__fmul_rn(map[y1 * w + x0], __fsub_rn(1.0f, wx)),
                             __fmul_rn(map[y1 * w + x1], wx));
    masks[(i64)blockIdx.z * height * width + p] =
        __fadd_rn(__fmul_rn(top, __fsub_rn(1.0f, wy)), __fmul_rn(bottom, wy));
}

// Each mask's minimum and maximum: one block of 256 threads per mask (grid (masks)).
extern "C" __global__ void mask_range(const float* __restrict__ masks, float* __restrict__ range,
                                      int pixels) {
    __shared__ float low[256], high[256];
    const float* mask = masks + (i64)blockIdx.x * pixels;
    float lo = __int_as_float(0x7f800000), hi = -__int_as_float(0x7f800000);
    for (int p = threadIdx.x; p < pixels; p += blockDim.x) {
        lo = fminf(lo, mask[p]);
        hi = fmaxf(hi, mask[p]);
    }
    low[threadIdx.x] = lo;
    high[threadIdx.x] = hi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) {
            low[threadIdx.x] = fminf(low[threadIdx.x], low[threadIdx.x + s]);
            high[threadIdx.x] = fmaxf(high[threadIdx.x], high[threadIdx.x + s]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        range[2 * blockIdx.x] = low[0];
        range[2 * blockIdx.x + 1] = high[0];
    }
}

// The plan's NHWC input: image (C x H x W) times each scaled mask. Grid (pixel blocks, 1, masks).
extern "C" __global__ void mask_images(const float* __restrict__ image,
                                       const float* __restrict__ masks,
                                       const float* __restrict__ range, float* __restrict__ y,
                                       int c, int pixels) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= pixels) return;
    i64 k = blockIdx.z;
    float lo = range[2 * k], hi = range[2 * k + 1];
    float m = __fdiv_rn(__fsub_rn(masks[k * pixels + p], lo), __fadd_rn(__fsub_rn(hi, lo), 1e-8f));
    float* yp = y + (k * pixels + p) * c;
    for (int ch = 0; ch < c; ++ch) yp[ch] = __fmul_rn(image[(i64)ch * pixels + p], m);
}
