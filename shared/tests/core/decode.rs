//! Decoding untrusted bytes: every common format becomes 8-bit RGB; bad files fail cleanly.

use std::io::Cursor;

use crate::common::{fixture, models_dir};
use camlime_core::preprocess::DecodeOptions;
use camlime_core::{Error, decode_image};
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgba};

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

#[test]
fn every_file_in_the_bad_folder_is_rejected_without_panic() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixture("bad")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let result = decode_image(&bytes, &DecodeOptions::default());
        assert!(result.is_err(), "{} decoded", path.display());
        seen += 1;
    }
    assert!(seen >= 7, "only {seen} bad files");
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    let bytes = std::fs::read(fixture("bad/bomb_10gpx.png")).unwrap();
    match decode_image(&bytes, &DecodeOptions::default()) {
        Err(Error::ImageTooLarge { width, height, .. }) => {
            assert_eq!((width, height), (100_000, 100_000))
        }
        other => panic!("expected ImageTooLarge, got {other:?}"),
    }
    let photo = std::fs::read(models_dir().join("samples/chelsea.png")).unwrap();
    assert!(matches!(
        decode_image(
            &photo,
            &DecodeOptions {
                max_pixels: 1000,
                ..Default::default()
            }
        ),
        Err(Error::ImageTooLarge { .. })
    ));
}

#[test]
fn grey_alpha_and_sixteen_bit_images_become_rgb() {
    let grey = DynamicImage::ImageLuma8(ImageBuffer::from_fn(4, 3, |x, _| Luma([x as u8 * 50])));
    let rgb = decode_image(&encode(grey, ImageFormat::Png), &DecodeOptions::default()).unwrap();
    assert_eq!(rgb.dimensions(), (4, 3));
    assert_eq!(rgb.get_pixel(2, 1).0, [100, 100, 100]);

    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(2, 2, |_, _| Rgba([10, 20, 30, 0])));
    // Alpha is dropped, not composited (PIL's convert("RGB")).
    let rgb = decode_image(&encode(rgba, ImageFormat::Png), &DecodeOptions::default()).unwrap();
    assert_eq!(rgb.get_pixel(1, 1).0, [10, 20, 30]);

    let deep = DynamicImage::ImageLumaA16(ImageBuffer::from_fn(2, 1, |x, _| {
        LumaA([[65535, 32896][x as usize], 65535])
    }));
    let rgb = decode_image(&encode(deep, ImageFormat::Png), &DecodeOptions::default()).unwrap();
    assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(rgb.get_pixel(1, 0).0, [128, 128, 128]);
}

#[test]
fn all_common_formats_decode_to_the_same_pixels() {
    let photo = decode_image(
        &std::fs::read(models_dir().join("samples/chelsea.png")).unwrap(),
        &DecodeOptions::default(),
    )
    .unwrap();
    let source = DynamicImage::ImageRgb8(photo.clone());
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::WebP,
    ] {
        let decoded =
            decode_image(&encode(source.clone(), format), &DecodeOptions::default()).unwrap();
        assert_eq!(decoded, photo, "{format:?} is lossless");
    }
    for format in [ImageFormat::Jpeg, ImageFormat::Gif] {
        let decoded =
            decode_image(&encode(source.clone(), format), &DecodeOptions::default()).unwrap();
        assert_eq!(decoded.dimensions(), photo.dimensions(), "{format:?}");
    }
}
