//! H.264 video in an MP4 container, the format players, browsers and other text-to-video
//! projects use. The codec is Cisco's OpenH264 (the `openh264` crate, built from the source it
//! bundles, so nothing has to be installed); the container is read and written by the `mp4`
//! crate. H.264 in MP4 stores each frame as NAL units prefixed by their length ("AVCC"), with
//! the sequence and picture parameter sets (SPS, PPS) in the track's `avcC` box; the codec
//! speaks the Annex B form (NAL units after `00 00 00 01` start codes). This module converts
//! between the two.

use std::io::{Cursor, Read, Seek};

use image::RgbImage;
use mp4::{
    AvcConfig, FourCC, MediaConfig, MediaType, Mp4Config, Mp4Reader, Mp4Sample, Mp4Writer,
    TrackConfig, TrackType,
};
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig};
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

use super::{Decoded, check_canvas};
use crate::error::DataError;

/// Ticks a second of the MP4 track's clock.
const TIMESCALE: u32 = 1000;

/// The quantiser range of the encoder, without rate control (0 is the finest step, 51 the
/// coarsest): Moving Shapes clips come back at 39 dB written at 64×64 and 49 dB at 128×128.
const QUANTISER: (u8, u8) = (12, 24);

/// NAL unit types of H.264 (ITU-T H.264, table 7-1).
const NAL_IDR_SLICE: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

/// The NAL units of an Annex B stream, without their start codes.
fn annex_b_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(stream).map(|packet| {
        let start = packet
            .iter()
            .position(|&b| b != 0)
            .map_or(packet.len(), |i| i + 1);
        &packet[start.min(packet.len())..]
    })
}

/// Encodes `frames` (RGB, `width × height`, both even) as H.264 in an MP4 file, `fps` frames a
/// second.
pub(super) fn encode(
    frames: &[Vec<u8>],
    width: usize,
    height: usize,
    fps: u32,
) -> Result<Vec<u8>, String> {
    let config = EncoderConfig::new()
        .max_frame_rate(FrameRate::from_hz(fps as f32))
        .rate_control_mode(RateControlMode::Off)
        .qp(QpRange::new(QUANTISER.0, QUANTISER.1))
        .skip_frames(false);
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| format!("the H.264 encoder failed to start: {e}"))?;
    let (mut sps, mut pps) = (None, None);
    let mut samples = Vec::with_capacity(frames.len());
    for rgb in frames {
        let yuv = YUVBuffer::from_rgb8_source(RgbSliceU8::new(rgb, (width, height)));
        let stream = encoder
            .encode(&yuv)
            .map_err(|e| format!("H.264 encoding failed: {e}"))?
            .to_vec();
        // One sample a frame: its slices, each prefixed by its length.
        let (mut sample, mut is_sync) = (Vec::new(), false);
        for unit in annex_b_units(&stream).filter(|u| !u.is_empty()) {
            match unit[0] & 0x1F {
                NAL_SPS => sps = Some(unit.to_vec()),
                NAL_PPS => pps = Some(unit.to_vec()),
                kind => {
                    is_sync |= kind == NAL_IDR_SLICE;
                    sample.extend_from_slice(&(unit.len() as u32).to_be_bytes());
                    sample.extend_from_slice(unit);
                }
            }
        }
        samples.push((sample, is_sync));
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err("the H.264 encoder wrote no sequence or picture parameter set".into());
    };
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(format!("{width}×{height} is too large for an MP4 track"));
    };
    let mp4_error = |e: mp4::Error| format!("writing the MP4 container failed: {e}");
    let mut writer = Mp4Writer::write_start(
        Cursor::new(Vec::new()),
        &Mp4Config {
            major_brand: FourCC::from(*b"isom"),
            minor_version: 512,
            compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"]
                .map(|b| FourCC::from(*b))
                .to_vec(),
            timescale: TIMESCALE,
        },
    )
    .map_err(mp4_error)?;
    writer
        .add_track(&TrackConfig {
            track_type: TrackType::Video,
            timescale: TIMESCALE,
            language: "und".into(),
            media_conf: MediaConfig::AvcConfig(AvcConfig {
                width: w,
                height: h,
                seq_param_set: sps,
                pic_param_set: pps,
            }),
        })
        .map_err(mp4_error)?;
    let duration = TIMESCALE / fps.max(1);
    for (i, (bytes, is_sync)) in samples.into_iter().enumerate() {
        let sample = Mp4Sample {
            start_time: i as u64 * u64::from(duration),
            duration,
            rendering_offset: 0,
            is_sync,
            bytes: bytes.into(),
        };
        writer.write_sample(1, &sample).map_err(mp4_error)?;
    }
    writer.write_end().map_err(mp4_error)?;
    Ok(writer.into_writer().into_inner())
}

/// Decodes the H.264 video track of an MP4 file frame by frame into `decoded`, with the
/// limits of the other readers checked from the container before anything is decoded.
pub(super) fn decode(
    reader: impl Read + Seek,
    bytes: u64,
    decoded: &mut Decoded<'_>,
) -> Result<(), DataError> {
    let path = decoded.path;
    let bad = |reason: String| DataError::Decode {
        path: path.to_owned(),
        reason,
    };
    // The demuxer reads box sizes from the file; a panic on a malformed one is an error.
    let header = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Mp4Reader::read_header(reader, bytes)
    }))
    .map_err(|_| bad("not a readable MP4 file".into()))?;
    let mut mp4 = header.map_err(|e| bad(format!("not a readable MP4 file: {e}")))?;
    let track = mp4
        .tracks()
        .values()
        .filter(|t| matches!(t.track_type(), Ok(TrackType::Video)))
        .min_by_key(|t| t.track_id())
        .ok_or_else(|| bad("the MP4 file has no video track".into()))?;
    match track.media_type() {
        Ok(MediaType::H264) => {}
        other => {
            let codec = track
                .box_type()
                .map_or_else(|_| format!("{other:?}"), |b| b.to_string());
            return Err(bad(format!(
                "its video is {codec}, not H.264 (the only codec read)"
            )));
        }
    }
    check_canvas(path, (u32::from(track.width()), u32::from(track.height())))?;
    let samples = track.sample_count();
    if samples as usize > super::MAX_FRAMES {
        return Err(DataError::TooLarge {
            path: path.to_owned(),
            what: format!("a clip of {samples} frames"),
            limit: format!("{} frames", super::MAX_FRAMES),
        });
    }
    let track_id = track.track_id();
    let start_code = [0u8, 0, 0, 1];
    let mut parameter_sets = Vec::new();
    for set in [
        track.sequence_parameter_set(),
        track.picture_parameter_set(),
    ] {
        let set = set.map_err(|e| bad(format!("its H.264 track has no parameter sets: {e}")))?;
        parameter_sets.extend_from_slice(&start_code);
        parameter_sets.extend_from_slice(set);
    }
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())
        .map_err(|e| bad(format!("the H.264 decoder failed to start: {e}")))?;
    for sample_id in 1..=samples {
        decoded.make_room()?;
        let sample = mp4
            .read_sample(track_id, sample_id)
            .map_err(|e| bad(format!("frame {sample_id} cannot be read: {e}")))?
            .ok_or_else(|| bad(format!("frame {sample_id} is missing")))?;
        // The sample's length-prefixed NAL units, as an Annex B packet.
        let mut packet = if sample_id == 1 {
            parameter_sets.clone()
        } else {
            Vec::new()
        };
        let mut rest: &[u8] = &sample.bytes;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let unit = rest
                .get(4..4 + len)
                .ok_or_else(|| bad(format!("frame {sample_id} is truncated")))?;
            packet.extend_from_slice(&start_code);
            packet.extend_from_slice(unit);
            rest = &rest[4 + len..];
        }
        let frame = decoder
            .decode(&packet)
            .map_err(|e| bad(format!("frame {sample_id} cannot be decoded: {e}")))?;
        if let Some(yuv) = frame {
            push_frame(&yuv, decoded)?;
        }
    }
    // Frames the decoder still holds (reordered B-frames).
    let remaining = decoder
        .flush_remaining()
        .map_err(|e| bad(format!("the last frames cannot be decoded: {e}")))?;
    for yuv in &remaining {
        push_frame(yuv, decoded)?;
    }
    Ok(())
}

/// Converts a decoded frame to RGB and hands it to `decoded`.
fn push_frame(yuv: &DecodedYUV<'_>, decoded: &mut Decoded<'_>) -> Result<(), DataError> {
    let (width, height) = yuv.dimensions();
    check_canvas(decoded.path, (width as u32, height as u32))?;
    let mut rgb = vec![0; width * height * 3];
    yuv.write_rgb8(&mut rgb);
    decoded.push(RgbImage::from_raw(width as u32, height as u32, rgb).expect("3 bytes a pixel"))
}

/// Whether `magic`, a file's first bytes, start an MP4 (ISO base media) file.
pub(super) fn is_mp4(magic: &[u8]) -> bool {
    magic.get(4..8) == Some(b"ftyp")
}
