use burn::tensor::{Tensor, TensorData};
use dit_data::fashion::FashionComposition;
use dit_data::fashion_judge::judge_fashion_clips;
use dit_data::moving_fashion::{MovingFashion, MovingFashionConfig};
use dit_data::{CaptionMode, Split, clip_to_tensor_data, psnr, video_to_clips};
use dit_model::AutoencoderConfig;
use dit_model::run::{load_classifier, load_module};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let device = dit_model::Backend::default_compiled().device().unwrap();
    let (classifier, _) = load_classifier(
        std::path::Path::new("checkpoints/fashion-classifier"),
        &device,
    )
    .unwrap();
    let ae = AutoencoderConfig::new()
        .with_latent_channels(8)
        .with_base_channels(16)
        .with_downsamplings(3)
        .init(&device)
        .unwrap();
    let ae = load_module(ae, std::path::Path::new(&args[1])).unwrap();
    let eval = MovingFashion::open(
        std::path::Path::new("/usr/share/datasets/fashion-mnist"),
        MovingFashionConfig::new(),
        7,
        Split::Eval,
    )
    .unwrap();
    let items: Vec<_> = FashionComposition::all()
        .into_iter()
        .flat_map(|c| (0..2).map(move |k| (c, k)))
        .map(|(c, k)| (c, eval.clip_for(c, k, CaptionMode::Canonical).item.clip))
        .collect();
    let clips: Vec<_> = items.iter().map(|i| i.1.clone()).collect();
    let mut rec = Vec::new();
    for chunk in clips.chunks(16) {
        let values: Vec<f32> = chunk.iter().flat_map(clip_to_tensor_data).collect();
        let video = Tensor::<5>::from_data(
            TensorData::new(values, [chunk.len(), 3, 8, 64, 64]),
            &device,
        );
        rec.extend(video_to_clips(ae.decode(ae.encode(video).mean)));
    }
    let acc = |cs: &[dit_data::Clip]| {
        let j = judge_fashion_clips(cs, &classifier, &device);
        j.iter()
            .zip(&items)
            .filter(|(j, i)| j.matches(&i.0).garment)
            .count() as f64
            / items.len() as f64
    };
    let mut sheet = dit_data::figure::ContactSheet::new(2);
    for i in [0usize, 50, 100, 150, 200, 250, 300, 350, 400, 450] {
        sheet = sheet.row(
            &clips[i],
            [format!("real {i}"), String::new(), String::new()],
        );
        sheet = sheet.row(
            &rec[i],
            [format!("recon {i}"), String::new(), String::new()],
        );
    }
    sheet
        .write(std::path::Path::new("/tmp/ae_check.png"))
        .unwrap();
    println!(
        "real {:.3} recon {:.3} psnr {:.2}",
        acc(&clips),
        acc(&rec),
        psnr(&clips, &rec)
    );
}
