//! Markers and entropy-coded data: from the file's bytes to every block's 64 quantised
//! coefficients (libjpeg's `jdmarker.c`, `jdhuff.c` and `jdphuff.c`, without their suspension).

use super::{Component, Frame, Markers};
use crate::preprocess::DecodeOptions;
use crate::{Error, Result};

/// Zig-zag position → natural (row-major) position, with libjpeg's 16 guard entries: a corrupt
/// run that overshoots position 63 lands on 63, as in `jpeg_natural_order`.
const NATURAL: [usize; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

/// The file ends inside `what` (Pillow, too, refuses truncated files by default).
fn truncated(what: &str) -> Error {
    Error::Decode(format!("JPEG file is truncated ({what} ends early)"))
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Decode(format!("corrupt JPEG: {what}"))
}

/// What decoding the entropy-coded data leaves: the frame and each component's coefficients
/// (`blocks_h × blocks_w` blocks of 64, natural order, not yet dequantised).
pub(super) struct Decoded {
    pub frame: Frame,
    pub markers: Markers,
    pub coefficients: Vec<Vec<i16>>,
}

/// A canonical Huffman table: `lookup` decodes codes of up to `LOOKUP_BITS` bits at once,
/// `max_code`/`offset` the longer ones (JPEG's F.2.2.3).
struct Huffman {
    lookup: Vec<(u8, u8)>,
    max_code: [i32; 18],
    offset: [i32; 17],
    symbols: Vec<u8>,
}

const LOOKUP_BITS: u32 = 9;

impl Huffman {
    fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Self> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return Err(corrupt("Huffman table sizes disagree"));
        }
        let mut lookup = vec![(0u8, 0u8); 1 << LOOKUP_BITS];
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let (mut code, mut index) = (0i32, 0usize);
        for length in 1..=16u32 {
            let count = usize::from(counts[length as usize - 1]);
            offset[length as usize] = index as i32 - code;
            for _ in 0..count {
                if code >= 1 << length {
                    return Err(corrupt("Huffman table over-subscribed"));
                }
                if length <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - length;
                    let first = (code as usize) << shift;
                    for entry in &mut lookup[first..first + (1 << shift)] {
                        *entry = (length as u8, symbols[index]);
                    }
                }
                code += 1;
                index += 1;
            }
            if count > 0 {
                max_code[length as usize] = code - 1;
            }
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        Ok(Self {
            lookup,
            max_code,
            offset,
            symbols,
        })
    }
}

/// The entropy-coded bit stream of one scan: byte stuffing removed; at a marker it feeds zero
/// bits, as libjpeg does (its `JWRN_HIT_MARKER`), and the end of the file is an error.
struct Bits<'a> {
    data: &'a [u8],
    position: usize,
    buffer: u64,
    count: u32,
    at_marker: bool,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], position: usize) -> Self {
        Self {
            data,
            position,
            buffer: 0,
            count: 0,
            at_marker: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        while self.count <= 56 {
            let byte = if self.at_marker {
                0
            } else {
                let Some(&byte) = self.data.get(self.position) else {
                    return Err(truncated("the image data"));
                };
                if byte == 0xFF {
                    match self.data.get(self.position + 1) {
                        Some(0) => {
                            self.position += 2;
                            0xFF
                        }
                        Some(_) => {
                            self.at_marker = true;
                            0
                        }
                        None => {
                            return Err(truncated("the image data"));
                        }
                    }
                } else {
                    self.position += 1;
                    byte
                }
            };
            self.buffer |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
        Ok(())
    }

    fn peek(&mut self, n: u32) -> Result<u32> {
        if self.count < n {
            self.fill()?;
        }
        Ok((self.buffer >> (64 - n)) as u32)
    }

    fn consume(&mut self, n: u32) {
        self.buffer <<= n;
        self.count -= n;
    }

    fn bits(&mut self, n: u32) -> Result<u32> {
        if n == 0 {
            return Ok(0);
        }
        let value = self.peek(n)?;
        self.consume(n);
        Ok(value)
    }

    fn bit(&mut self) -> Result<bool> {
        Ok(self.bits(1)? == 1)
    }

    /// `n` bits read as a JPEG "extended" signed value (F.2.2.1).
    fn receive_extend(&mut self, n: u32) -> Result<i32> {
        if n == 0 {
            return Ok(0);
        }
        if n > 16 {
            return Err(corrupt("coefficient longer than 16 bits"));
        }
        let value = self.bits(n)? as i32;
        Ok(if value < 1 << (n - 1) {
            value - (1 << n) + 1
        } else {
            value
        })
    }

    fn decode(&mut self, table: &Huffman) -> Result<u8> {
        let (length, symbol) = table.lookup[self.peek(LOOKUP_BITS)? as usize];
        if length > 0 {
            self.consume(u32::from(length));
            return Ok(symbol);
        }
        let bits = self.peek(16)? as i32;
        for length in LOOKUP_BITS + 1..=16 {
            let code = bits >> (16 - length);
            if code <= table.max_code[length as usize] {
                self.consume(length);
                let index = (code + table.offset[length as usize]) as usize;
                return table
                    .symbols
                    .get(index)
                    .copied()
                    .ok_or_else(|| corrupt("bad Huffman code"));
            }
        }
        Err(corrupt("bad Huffman code"))
    }

    /// At a restart interval's end: drop the partial byte, skip to the marker and past it.
    /// A missing marker is tolerated, as libjpeg's resynchronisation mostly does.
    fn restart(&mut self) {
        self.buffer = 0;
        self.count = 0;
        self.at_marker = false;
        while self.position + 1 < self.data.len() {
            if self.data[self.position] == 0xFF
                && (0xD0..=0xD7).contains(&self.data[self.position + 1])
            {
                self.position += 2;
                return;
            }
            if self.data[self.position] == 0xFF
                && self.data[self.position + 1] != 0
                && self.data[self.position + 1] != 0xFF
            {
                return;
            }
            self.position += 1;
        }
    }

    /// Where the next marker starts once the scan is done.
    fn end(&self) -> usize {
        let mut position = self.position;
        while position + 1 < self.data.len()
            && !(self.data[position] == 0xFF
                && self.data[position + 1] != 0
                && !(0xD0..=0xD7).contains(&self.data[position + 1]))
        {
            position += 1;
        }
        position
    }
}

/// A scan header.
struct Scan {
    components: Vec<(usize, usize, usize)>,
    start: usize,
    end: usize,
    high: u32,
    low: u32,
}

struct Reader<'a> {
    data: &'a [u8],
    position: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8> {
        let byte = *self
            .data
            .get(self.position)
            .ok_or_else(|| truncated("a header"))?;
        self.position += 1;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }

    /// The next marker, skipping fill bytes.
    fn marker(&mut self) -> Result<u8> {
        loop {
            if self.u8()? != 0xFF {
                continue;
            }
            let mut code = self.u8()?;
            while code == 0xFF {
                code = self.u8()?;
            }
            if code != 0 {
                return Ok(code);
            }
        }
    }

    /// A marker segment's payload.
    fn segment(&mut self) -> Result<&[u8]> {
        let length = usize::from(self.u16()?);
        if length < 2 || self.position + length - 2 > self.data.len() {
            return Err(truncated("a marker segment"));
        }
        let start = self.position;
        self.position += length - 2;
        Ok(&self.data[start..self.position])
    }
}

fn frame_header(payload: &[u8], progressive: bool) -> Result<Frame> {
    if payload.len() < 6 {
        return Err(corrupt("short frame header"));
    }
    if payload[0] != 8 {
        return Err(Error::Decode(format!(
            "{}-bit JPEG samples are not supported (only 8-bit)",
            payload[0]
        )));
    }
    let height = usize::from(u16::from_be_bytes([payload[1], payload[2]]));
    let width = usize::from(u16::from_be_bytes([payload[3], payload[4]]));
    let count = usize::from(payload[5]);
    if width == 0 || height == 0 {
        return Err(Error::Decode(format!(
            "JPEG has no pixels ({width}×{height}), or gives its height later (DNL), which is not supported"
        )));
    }
    if count == 0 || payload.len() < 6 + 3 * count {
        return Err(corrupt("bad component list in the frame header"));
    }
    let mut components = Vec::with_capacity(count);
    for c in payload[6..6 + 3 * count].chunks_exact(3) {
        let (h, v) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) || c[2] > 3 {
            return Err(corrupt("bad sampling factors or quantisation table"));
        }
        components.push(Component {
            id: c[0],
            h,
            v,
            table: usize::from(c[2]),
            width: 0,
            height: 0,
            blocks_w: 0,
            blocks_h: 0,
            quant: None,
        });
    }
    let max_h = components.iter().map(|c| c.h).max().unwrap_or(1);
    let max_v = components.iter().map(|c| c.v).max().unwrap_or(1);
    let mcus_x = width.div_ceil(8 * max_h);
    let mcus_y = height.div_ceil(8 * max_v);
    for c in &mut components {
        c.width = (width * c.h).div_ceil(max_h);
        c.height = (height * c.v).div_ceil(max_v);
        c.blocks_w = mcus_x * c.h;
        c.blocks_h = mcus_y * c.v;
    }
    Ok(Frame {
        width,
        height,
        progressive,
        components,
        max_h,
        max_v,
        mcus_x,
        mcus_y,
    })
}

fn unsupported_frame(code: u8) -> Error {
    let kind = match code {
        0xC3 => "lossless",
        0xC5..=0xC7 => "hierarchical",
        _ => "arithmetic-coded",
    };
    Error::Decode(format!(
        "{kind} JPEG is not supported (baseline and progressive Huffman only)"
    ))
}

/// Parse the file and decode every scan.
pub(super) fn decode(bytes: &[u8], options: &DecodeOptions) -> Result<Decoded> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(Error::Decode(
            "not a JPEG file (no start-of-image marker)".into(),
        ));
    }
    let mut reader = Reader {
        data: bytes,
        position: 2,
    };
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc: [Option<Huffman>; 4] = [None, None, None, None];
    let mut ac: [Option<Huffman>; 4] = [None, None, None, None];
    let mut markers = Markers::default();
    let mut frame: Option<Frame> = None;
    let mut coefficients: Vec<Vec<i16>> = Vec::new();
    let mut restart_interval = 0usize;
    let mut scans = 0usize;
    loop {
        let code = reader.marker()?;
        match code {
            0xD9 => break,
            0xD0..=0xD8 | 0x01 => {}
            0xC0..=0xC2 => {
                if frame.is_some() {
                    return Err(corrupt("two frame headers"));
                }
                let parsed = frame_header(reader.segment()?, code == 0xC2)?;
                let pixels = parsed.width as u64 * parsed.height as u64;
                if pixels > options.max_pixels {
                    return Err(Error::ImageTooLarge {
                        width: parsed.width as u32,
                        height: parsed.height as u32,
                        pixels,
                        limit: options.max_pixels,
                    });
                }
                coefficients = parsed
                    .components
                    .iter()
                    .map(|c| vec![0i16; c.blocks_w * c.blocks_h * 64])
                    .collect();
                frame = Some(parsed);
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return Err(unsupported_frame(code)),
            0xC4 => {
                let mut payload = reader.segment()?;
                while !payload.is_empty() {
                    if payload.len() < 17 {
                        return Err(corrupt("short Huffman table"));
                    }
                    let (class, slot) = (payload[0] >> 4, usize::from(payload[0] & 15));
                    let counts: [u8; 16] = payload[1..17].try_into().expect("16 bytes");
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    if payload.len() < 17 + total || slot > 3 || class > 1 {
                        return Err(corrupt("bad Huffman table"));
                    }
                    let table = Huffman::new(&counts, payload[17..17 + total].to_vec())?;
                    if class == 0 {
                        dc[slot] = Some(table);
                    } else {
                        ac[slot] = Some(table);
                    }
                    payload = &payload[17 + total..];
                }
            }
            0xDB => {
                let mut payload = reader.segment()?;
                while !payload.is_empty() {
                    let (precision, slot) = (payload[0] >> 4, usize::from(payload[0] & 15));
                    let size = if precision == 0 { 64 } else { 128 };
                    if slot > 3 || precision > 1 || payload.len() < 1 + size {
                        return Err(corrupt("bad quantisation table"));
                    }
                    let mut table = [0u16; 64];
                    for k in 0..64 {
                        table[NATURAL[k]] = if precision == 0 {
                            u16::from(payload[1 + k])
                        } else {
                            u16::from_be_bytes([payload[1 + 2 * k], payload[2 + 2 * k]])
                        };
                    }
                    quant[slot] = Some(table);
                    payload = &payload[1 + size..];
                }
            }
            0xDD => {
                let payload = reader.segment()?;
                if payload.len() < 2 {
                    return Err(corrupt("short restart interval"));
                }
                restart_interval = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
            }
            0xE0 => {
                if reader.segment()?.starts_with(b"JFIF\0") {
                    markers.jfif = true;
                }
            }
            0xE1 => {
                // A malformed EXIF block only loses the tag, as in Pillow.
                if let Some(exif) = reader.segment()?.strip_prefix(b"Exif\0\0") {
                    markers.orientation = image::metadata::Orientation::from_exif_chunk(exif)
                        .filter(|o| *o != image::metadata::Orientation::NoTransforms);
                }
            }
            0xEE => {
                let payload = reader.segment()?;
                if payload.starts_with(b"Adobe") && payload.len() >= 12 {
                    markers.adobe_transform = Some(payload[11]);
                }
            }
            0xDA => {
                let Some(frame) = frame.as_mut() else {
                    return Err(corrupt("image data before the frame header"));
                };
                let scan = scan_header(reader.segment()?, frame)?;
                for &(c, _, _) in &scan.components {
                    let component = &mut frame.components[c];
                    if component.quant.is_none() {
                        component.quant = Some(quant[component.table].ok_or_else(|| {
                            corrupt(format!("quantisation table {} is missing", component.table))
                        })?);
                    }
                }
                let mut bits = Bits::new(bytes, reader.position);
                let mut state = ScanState {
                    frame,
                    scan: &scan,
                    dc: &dc,
                    ac: &ac,
                    coefficients: &mut coefficients,
                    predictions: [0; 4],
                    end_of_band_run: 0,
                };
                state.run(&mut bits, restart_interval)?;
                reader.position = bits.end();
                scans += 1;
            }
            _ => {
                reader.segment()?;
            }
        }
    }
    let frame = frame.ok_or_else(|| corrupt("no frame header"))?;
    if scans == 0 {
        return Err(corrupt("no image data"));
    }
    if let Some(c) = frame.components.iter().find(|c| c.quant.is_none()) {
        return Err(corrupt(format!("component {} has no image data", c.id)));
    }
    Ok(Decoded {
        frame,
        markers,
        coefficients,
    })
}

fn scan_header(payload: &[u8], frame: &Frame) -> Result<Scan> {
    let count = usize::from(
        *payload
            .first()
            .ok_or_else(|| corrupt("empty scan header"))?,
    );
    if count == 0 || count > 4 || payload.len() < 1 + 2 * count + 3 {
        return Err(corrupt("bad scan header"));
    }
    let mut components = Vec::with_capacity(count);
    for c in payload[1..1 + 2 * count].chunks_exact(2) {
        let index = frame
            .components
            .iter()
            .position(|component| component.id == c[0])
            .ok_or_else(|| corrupt(format!("scan names unknown component {}", c[0])))?;
        let (dc, ac) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
        if dc > 3 || ac > 3 {
            return Err(corrupt("bad Huffman table slot"));
        }
        components.push((index, dc, ac));
    }
    let tail = &payload[1 + 2 * count..];
    let (start, end) = (usize::from(tail[0]), usize::from(tail[1]));
    let (high, low) = (u32::from(tail[2] >> 4), u32::from(tail[2] & 15));
    let valid = if frame.progressive {
        start <= end
            && end <= 63
            && (start == 0) == (end == 0)
            && (start == 0 || count == 1)
            && high <= 13
            && low <= 13
    } else {
        start == 0 && end == 63 && high == 0 && low == 0
    };
    if !valid {
        return Err(corrupt(
            "bad spectral selection or successive approximation",
        ));
    }
    let blocks: usize = components
        .iter()
        .map(|&(c, _, _)| frame.components[c].h * frame.components[c].v)
        .sum();
    if count > 1 && blocks > 10 {
        return Err(corrupt("more than 10 blocks in an MCU"));
    }
    Ok(Scan {
        components,
        start,
        end,
        high,
        low,
    })
}

struct ScanState<'a> {
    frame: &'a Frame,
    scan: &'a Scan,
    dc: &'a [Option<Huffman>; 4],
    ac: &'a [Option<Huffman>; 4],
    coefficients: &'a mut Vec<Vec<i16>>,
    predictions: [i32; 4],
    end_of_band_run: u32,
}

impl ScanState<'_> {
    fn run(&mut self, bits: &mut Bits, restart_interval: usize) -> Result<()> {
        let single = self.scan.components.len() == 1;
        let (units_x, units_y) = if single {
            // A non-interleaved scan covers the component's own blocks, not whole MCUs.
            let component = &self.frame.components[self.scan.components[0].0];
            (component.width.div_ceil(8), component.height.div_ceil(8))
        } else {
            (self.frame.mcus_x, self.frame.mcus_y)
        };
        let mut to_restart = restart_interval;
        for unit_y in 0..units_y {
            for unit_x in 0..units_x {
                if restart_interval > 0 {
                    if to_restart == 0 {
                        bits.restart();
                        self.predictions = [0; 4];
                        self.end_of_band_run = 0;
                        to_restart = restart_interval;
                    }
                    to_restart -= 1;
                }
                for slot in 0..self.scan.components.len() {
                    let component = &self.frame.components[self.scan.components[slot].0];
                    if single {
                        self.block(bits, slot, unit_y * component.blocks_w + unit_x)?;
                        continue;
                    }
                    let (h, v, blocks_w) = (component.h, component.v, component.blocks_w);
                    for by in 0..v {
                        for bx in 0..h {
                            let block = (unit_y * v + by) * blocks_w + unit_x * h + bx;
                            self.block(bits, slot, block)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn table<'t>(tables: &'t [Option<Huffman>; 4], slot: usize, kind: &str) -> Result<&'t Huffman> {
        tables[slot]
            .as_ref()
            .ok_or_else(|| corrupt(format!("{kind} Huffman table {slot} is missing")))
    }

    /// Decode one block of the scan's component `slot`.
    fn block(&mut self, bits: &mut Bits, slot: usize, block: usize) -> Result<()> {
        let scan = self.scan;
        let (component, dc, ac) = scan.components[slot];
        let coefficients = &mut self.coefficients[component][block * 64..][..64];
        if !self.frame.progressive {
            let size = bits.decode(Self::table(self.dc, dc, "DC")?)?;
            let diff = bits.receive_extend(u32::from(size))?;
            self.predictions[slot] = self.predictions[slot].wrapping_add(diff);
            coefficients[0] = self.predictions[slot] as i16;
            let table = Self::table(self.ac, ac, "AC")?;
            let mut k = 1;
            while k < 64 {
                let rs = bits.decode(table)?;
                let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
                if size != 0 {
                    k += run;
                    coefficients[NATURAL[k]] = bits.receive_extend(size)? as i16;
                } else if run == 15 {
                    k += 15;
                } else {
                    break;
                }
                k += 1;
            }
            return Ok(());
        }
        if scan.start == 0 {
            if scan.high == 0 {
                let size = bits.decode(Self::table(self.dc, dc, "DC")?)?;
                let diff = bits.receive_extend(u32::from(size))?;
                self.predictions[slot] = self.predictions[slot].wrapping_add(diff);
                coefficients[0] = (self.predictions[slot] << scan.low) as i16;
            } else if bits.bit()? {
                coefficients[0] |= 1 << scan.low;
            }
            return Ok(());
        }
        let table = Self::table(self.ac, ac, "AC")?;
        if scan.high == 0 {
            if self.end_of_band_run > 0 {
                self.end_of_band_run -= 1;
                return Ok(());
            }
            let mut k = scan.start;
            while k <= scan.end {
                let rs = bits.decode(table)?;
                let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
                if size != 0 {
                    k += run as usize;
                    coefficients[NATURAL[k]] = (bits.receive_extend(size)? << scan.low) as i16;
                } else if run == 15 {
                    k += 15;
                } else {
                    self.end_of_band_run = (1 << run) + bits.bits(run)? - 1;
                    break;
                }
                k += 1;
            }
            return Ok(());
        }
        // AC refinement (`decode_mcu_AC_refine`).
        let plus = 1i16 << scan.low;
        let minus = (-1i16) << scan.low;
        let refine = |value: &mut i16, bits: &mut Bits| -> Result<()> {
            if bits.bit()? && (*value & plus) == 0 {
                *value = value.wrapping_add(if *value >= 0 { plus } else { minus });
            }
            Ok(())
        };
        let mut k = scan.start;
        if self.end_of_band_run == 0 {
            while k <= scan.end {
                let rs = bits.decode(table)?;
                let (mut run, size) = (i32::from(rs >> 4), rs & 15);
                let mut value = 0i16;
                if size != 0 {
                    value = if bits.bit()? { plus } else { minus };
                } else if run != 15 {
                    self.end_of_band_run = (1 << run) + bits.bits(run as u32)?;
                    break;
                }
                while k <= scan.end {
                    let coefficient = &mut coefficients[NATURAL[k]];
                    if *coefficient != 0 {
                        refine(coefficient, bits)?;
                    } else {
                        run -= 1;
                        if run < 0 {
                            break;
                        }
                    }
                    k += 1;
                }
                if value != 0 {
                    coefficients[NATURAL[k]] = value;
                }
                k += 1;
            }
        }
        if self.end_of_band_run > 0 {
            while k <= scan.end {
                let coefficient = &mut coefficients[NATURAL[k]];
                if *coefficient != 0 {
                    refine(coefficient, bits)?;
                }
                k += 1;
            }
            self.end_of_band_run -= 1;
        }
        Ok(())
    }
}
