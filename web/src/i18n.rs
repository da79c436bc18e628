//! The interface's two languages: English and Simplified Chinese. Every text the page shows
//! goes through [`t`]; a test checks that each key the page uses is in the table.

use serde::{Deserialize, Serialize};

/// An interface language.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Lang {
    /// English.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The code stored in `localStorage` and written into `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Zh => "zh-CN",
        }
    }

    /// From a stored code or a browser language tag (`zh`, `zh-CN`, `zh-Hans-CN` → Chinese).
    pub fn from_code(code: &str) -> Self {
        if code.to_ascii_lowercase().starts_with("zh") {
            Self::Zh
        } else {
            Self::En
        }
    }

    /// The other language (the switch's target).
    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Zh,
            Self::Zh => Self::En,
        }
    }
}

/// (key, English, Chinese).
pub const TABLE: &[(&str, &str, &str)] = &[
    ("title", "CamLIME", "CamLIME"),
    (
        "tagline",
        "What does the classifier look at? LIME guided by class activation maps, in your browser.",
        "分类器在看哪里？由类激活图引导的 LIME，在浏览器中运行。",
    ),
    ("switch_lang", "中文", "English"),
    ("image", "Image", "图像"),
    (
        "drop_here",
        "Drop an image here, paste one, or choose a file",
        "拖入图像、粘贴图像或选择文件",
    ),
    ("choose_file", "Choose image…", "选择图像…"),
    ("samples", "Samples", "示例"),
    ("model", "Model", "模型"),
    ("own_model", "Your own .onnx…", "自定义 .onnx…"),
    ("task_switch", "Task", "任务"),
    ("task_classification", "Classification", "图像分类"),
    ("task_detection", "Object detection", "目标检测"),
    ("task_segmentation", "Segmentation", "分割"),
    ("task_faces", "Faces", "人脸"),
    ("model_loading", "Loading model…", "正在加载模型…"),
    ("model_ready", "Model ready", "模型已就绪"),
    ("classes", "classes", "个类别"),
    ("embedding", "embedding", "维特征向量"),
    ("layers", "layers", "个层"),
    ("predictions", "Top-5 predictions", "前 5 个预测"),
    ("task", "What is explained", "解释对象"),
    (
        "detection_note",
        "A detector: Explain shows why it scores its best box; then pick any box to explain that one.",
        "检测模型：“解释”给出最佳检测框得分的依据；之后可选择任一检测框来解释它。",
    ),
    (
        "segmentation_note",
        "A segmenter: Explain shows what raises its logits summed over the predicted mask (outlined in red).",
        "分割模型：“解释”给出提高预测掩膜（红色描边）内 logit 总和的区域。",
    ),
    (
        "identity_note",
        "A face embedding: Explain shows what makes this face look like the reference face — the cosine similarity of their embeddings. Choose a reference photo first.",
        "人脸特征模型：“解释”给出使该人脸与参考人脸相似的区域——二者特征向量的余弦相似度。请先选择参考照片。",
    ),
    ("reference", "Reference face", "参考人脸"),
    (
        "choose_reference",
        "Choose reference photo…",
        "选择参考照片…",
    ),
    ("no_reference", "no reference yet", "尚未选择参考照片"),
    ("face", "Face", "人脸"),
    ("face_of", "of", "/"),
    ("found_by", "found by", "检测模型："),
    (
        "face_note",
        "The model sees this crop of the photo; pick another face to explain it.",
        "模型看到的是照片中的这一裁剪区域；可选择另一张人脸来解释。",
    ),
    (
        "target_hint",
        "Click a class to explain it",
        "点击类别以解释该类别",
    ),
    ("method", "Method", "方法"),
    (
        "cam_for_camlime",
        "CAM guiding CamLIME",
        "引导 CamLIME 的 CAM",
    ),
    ("layer", "Layer", "层"),
    ("default_layer", "default", "默认"),
    ("num_samples", "Samples", "采样数"),
    ("segmenter", "Segmenter", "超像素分割"),
    ("kernel_width", "Kernel width", "核宽度"),
    ("mode", "CamLIME mode", "CamLIME 模式"),
    ("seed", "Seed", "随机种子"),
    ("run_on_server", "Run on server", "在服务器上运行"),
    ("server_url", "camlime serve URL", "camlime serve 地址"),
    (
        "server_token",
        "Token (if the server has tokens)",
        "令牌（服务器启用令牌时）",
    ),
    (
        "server_bundled_only",
        "The server runs only its own models: pick a bundled model.",
        "服务器只运行自己的模型：请选择内置模型。",
    ),
    (
        "server_lost",
        "Lost the connection to the server.",
        "与服务器的连接已断开。",
    ),
    ("no_image", "Pick an image first.", "请先选择一张图片。"),
    ("explain", "Explain", "解释"),
    ("cancel", "Cancel", "取消"),
    ("cancelled", "Cancelled.", "已取消。"),
    ("working", "Working", "计算中"),
    ("result", "Explanation", "解释结果"),
    (
        "no_result",
        "Pick an image and a method, then press Explain.",
        "选择图像和方法，然后点击“解释”。",
    ),
    ("show", "Show", "显示"),
    ("positive", "supporting", "支持"),
    ("negative", "opposing", "反对"),
    ("both", "both", "两者"),
    ("hide_rest", "Hide the rest", "隐藏其余区域"),
    ("features", "Features", "特征数"),
    ("weights_chart", "Weight per segment", "各超像素的权重"),
    ("cam_map", "Class activation map", "类激活图"),
    (
        "detections",
        "Every detection (the explained box in red)",
        "全部检测框（红框为被解释的目标）",
    ),
    (
        "segmentation",
        "Predicted mask (tinted) and the explained region (outlined)",
        "预测掩膜（着色）与被解释区域（描边）",
    ),
    (
        "boxes_hint",
        "Explain another box (or click it in the picture):",
        "解释其他检测框（或在图中点击）：",
    ),
    (
        "lime_baseline",
        "LIME on the same samples",
        "同样本上的 LIME",
    ),
    ("compare", "Comparison", "对比"),
    (
        "compare_hint",
        "Every explanation of this image is kept here, side by side.",
        "本图像的每个解释都会并排保存在这里。",
    ),
    ("clear", "Clear", "清空"),
    ("download_png", "Download PNG", "下载 PNG"),
    ("download_record", "Download record", "下载记录"),
    ("load_record", "Load record…", "加载记录…"),
    ("replay", "Replay", "重放"),
    (
        "replay_same",
        "Replay reproduced the record exactly.",
        "重放完全复现了该记录。",
    ),
    (
        "replay_differs",
        "Replay differs from the record.",
        "重放结果与记录不一致。",
    ),
    ("error", "Error", "错误"),
    ("dismiss", "Dismiss", "关闭"),
    ("target", "Target", "目标类别"),
    ("r2", "R²", "R²"),
    ("took", "took", "耗时"),
    ("open_full", "Open CamLIME", "打开 CamLIME"),
    ("probability", "probability", "概率"),
];

/// The text of `key` in `lang` (the key itself if the table lacks it, so a gap is visible).
pub fn t(lang: Lang, key: &'static str) -> &'static str {
    TABLE
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or(key, |(_, en, zh)| match lang {
            Lang::En => en,
            Lang::Zh => zh,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_key_the_page_uses_is_translated() {
        let sources = [
            include_str!("app/mod.rs"),
            include_str!("app/view.rs"),
            include_str!("app/result.rs"),
        ];
        let known: HashSet<&str> = TABLE.iter().map(|(k, _, _)| *k).collect();
        assert_eq!(known.len(), TABLE.len(), "duplicate keys");
        let mut used = 0;
        for source in sources {
            for piece in source.split("tr(\"").skip(1) {
                let key = piece.split('"').next().unwrap();
                assert!(known.contains(key), "`{key}` is not in the table");
                used += 1;
            }
        }
        assert!(used > 30, "only {used} keys found: the scan is broken");
        for (key, en, zh) in TABLE {
            assert!(!en.is_empty() && !zh.is_empty(), "{key}");
        }
        assert_eq!(t(Lang::Zh, "explain"), "解释");
        assert_eq!(t(Lang::En, "no such key"), "no such key");
    }

    #[test]
    fn language_codes() {
        assert_eq!(Lang::from_code("zh-Hans-CN"), Lang::Zh);
        assert_eq!(Lang::from_code("en-GB"), Lang::En);
        assert_eq!(Lang::from_code(Lang::Zh.code()), Lang::Zh);
        assert_eq!(Lang::En.other(), Lang::Zh);
    }
}
