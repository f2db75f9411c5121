//! H.264 video in an MP4 container, the format players, browsers and other text-to-video
//! projects use. The codec is Cisco's OpenH264 (the `openh264` crate, built from the source it
//! bundles, so nothing has to be installed); the container is written by the `mp4` crate and
//! read by [`demux`], which is built for files from anywhere. H.264 in MP4 stores each frame
//! as NAL units prefixed by their length ("AVCC"), with the sequence and picture parameter sets
//! (SPS, PPS) in the track's `avcC` box; the codec speaks the Annex B form (NAL units after
//! `00 00 00 01` start codes). This module converts between the two.

use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use image::RgbImage;
use mp4::{
    AvcConfig, FourCC, MediaConfig, Mp4Config, Mp4Sample, Mp4Writer, TrackConfig, TrackType,
};
use openh264::OpenH264API;
use openh264::decoder::{DecodedYUV, Decoder, DecoderConfig, Flush};
use openh264::encoder::{Encoder, EncoderConfig, FrameRate, QpRange, RateControlMode};
use openh264::formats::{RgbSliceU8, YUVBuffer, YUVSource};

use super::{Decoded, check_canvas};
use crate::error::DataError;

mod demux;

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
///
/// The container's index is read by [`demux`], which takes any bytes without hanging,
/// over-allocating or panicking. Frames stored out of order (B-frames: each sample is in
/// decoding order) come out of the decoder in presentation order, the last ones when it is
/// flushed at the end.
pub(super) fn decode(
    mut reader: impl Read + Seek,
    bytes: u64,
    decoded: &mut Decoded<'_>,
) -> Result<(), DataError> {
    let path = decoded.path;
    let bad = |reason: String| DataError::Decode {
        path: path.to_owned(),
        reason,
    };
    let track = demux::read_video_track(&mut reader, bytes, super::MAX_FRAMES as u64).map_err(
        |e| match e {
            demux::DemuxError::Malformed(reason) => bad(reason),
            demux::DemuxError::TooManyFrames(samples) => DataError::TooLarge {
                path: path.to_owned(),
                what: format!("a clip of {samples} frames"),
                limit: format!("{} frames", super::MAX_FRAMES),
            },
        },
    )?;
    let Some(avc) = &track.description.avc else {
        return Err(bad(format!(
            "its video is {}, not H.264 (the only codec read){}",
            track.description.codec,
            convert_hint(path)
        )));
    };
    check_profile(avc.profile).map_err(|profile| {
        bad(format!(
            "its H.264 is {profile} profile, which the decoder (OpenH264) does not read: it \
             reads 8-bit 4:2:0 video (Constrained Baseline, Main and High){}",
            convert_hint(path)
        ))
    })?;
    let (width, height) = track.description.size;
    check_canvas(path, (u32::from(width), u32::from(height)))?;
    let mut packet = Vec::new();
    for set in &avc.parameter_sets {
        packet.extend_from_slice(&START_CODE);
        packet.extend_from_slice(set);
    }
    // Flushing after each packet, the crate's default, hands out held-back frames early and
    // breaks streams with B-frames; they are flushed once, after the last sample.
    let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
    let mut decoder = Decoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| bad(format!("the H.264 decoder failed to start: {e}")))?;
    let mut sample = Vec::new();
    for (i, range) in track.samples.iter().enumerate() {
        decoded.make_room()?;
        let frame = i + 1;
        sample.resize((range.end - range.start) as usize, 0);
        reader
            .seek(SeekFrom::Start(range.start))
            .and_then(|_| reader.read_exact(&mut sample))
            .map_err(|e| bad(format!("frame {frame} cannot be read: {e}")))?;
        // The sample's length-prefixed NAL units, as an Annex B packet.
        let mut rest: &[u8] = &sample;
        while !rest.is_empty() {
            let (len, units) = rest
                .split_at_checked(avc.nal_length_size)
                .ok_or_else(|| bad(format!("frame {frame} is truncated")))?;
            let len = len.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
            let (unit, next) = units
                .split_at_checked(len)
                .ok_or_else(|| bad(format!("frame {frame} is truncated")))?;
            packet.extend_from_slice(&START_CODE);
            packet.extend_from_slice(unit);
            rest = next;
        }
        let picture = decoder
            .decode(&packet)
            .map_err(|e| bad(format!("frame {frame} cannot be decoded: {e}")))?;
        if let Some(yuv) = picture {
            push_frame(&yuv, decoded)?;
        }
        packet.clear();
    }
    let remaining = decoder
        .flush_remaining()
        .map_err(|e| bad(format!("the last frames cannot be decoded: {e}")))?;
    for yuv in &remaining {
        push_frame(yuv, decoded)?;
    }
    Ok(())
}

/// The Annex B start code before each NAL unit.
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Checks that OpenH264 decodes an H.264 profile (`profile_idc`, ITU-T H.264 Annex A); the
/// name of the profile where it does not.
fn check_profile(profile: u8) -> Result<(), &'static str> {
    match profile {
        66 | 77 | 100 => Ok(()),
        88 => Err("Extended"),
        110 => Err("High 10"),
        122 => Err("High 4:2:2"),
        244 => Err("High 4:4:4 Predictive"),
        44 => Err("CAVLC 4:4:4 Intra"),
        _ => Err("an unknown"),
    }
}

/// How to convert a video to one the reader takes.
fn convert_hint(path: &Path) -> String {
    format!(
        "; convert it with `ffmpeg -i {} -c:v libx264 -pix_fmt yuv420p clip.mp4`",
        path.display()
    )
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
