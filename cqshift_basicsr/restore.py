"""``cqshift-restore``: restore the faces of photos (or aligned faces) with an exported model, at one or more alphas.

    cqshift-restore -i photos/ -o results/ --model model.pth --alpha 1
    cqshift-restore -i photo.jpg -o results/ --model model.pth --alpha 0,0.5,1,1.5      # a contact sheet per face
    cqshift-restore -i faces/ -o results/ --model model.pth --aligned                   # already aligned faces
    cqshift-restore -i photo.jpg -o results/ --model model.pth --identity-weights arcface.pth --identity-floor 0.6

``--model`` is a ``cqshift-export`` file (CQShift, GFPGAN or PSFRGAN). Outputs, as GFPGAN's ``inference_gfpgan.py``
lays them out (a name is the input's path under ``-i`` without its extension; with several alphas each file gets an
``_a<alpha>`` suffix):

* ``cropped_faces/<name>_<k>.png``: face k aligned at the model's size (the restorers' input);
* ``restored_faces/<name>_<k>.png``: its restoration;
* ``cmp/<name>_<k>.png``: a contact sheet: the input face, then one column per alpha;
* ``restored_imgs/<name>.<ext>``: the photo with its faces pasted back (a photo without a face: copied unchanged,
  or skipped with ``--skip-no-face``), in the input's mode where the format holds it (gray, alpha plane, 16-bit);
* ``restored_imgs/<name>.faces.json``: the sidecar: per face its box, landmarks, alignment, the size of its shift
  ``||Delta^i||`` and its projection on Delta_global (a degradation-severity score; CQShift models), and per alpha
  the alpha used and, with ``--identity-weights``, the identity similarity between the input face and its
  restoration. ``--identity-floor T`` lowers alpha per face (in steps of ``--identity-step``) until that similarity
  is at least T, and the sidecar says where it did.

PNG outputs carry a ``cqshift-basicsr`` text chunk: the package version, the model file's SHA-256 and the alpha.
Unreadable files are reported and skipped; the run goes on and exits with status 1 at the end.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import time
import zlib

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import __version__
from .data.face_io import IMG_EXTENSIONS, BadImageError, decode_photo, resize_face, restore_photo_mode
from .evaluation.sheets import label_tile
from .identity_guard import IDENTITY_ARCHS, IdentityScorer, alpha_grid, guard_alpha
from .option_check import ALPHA_RANGE
from .restorer import PRECISIONS, CQShiftRestorer

__all__ = ['main', 'parse_alphas', 'find_inputs', 'png_with_text', 'write_image']

OUTPUT_FOLDERS = ('cropped_faces', 'restored_faces', 'cmp', 'restored_imgs')
PNG_TEXT_KEY = 'cqshift-basicsr'


def parse_alphas(text):
    """'1' or '0,0.5,1' -> [floats], each within :data:`ALPHA_RANGE`, without repeats."""
    try:
        alphas = [float(part) for part in str(text).split(',') if part.strip()]
    except ValueError:
        raise ValueError(f'--alpha: expected a number or a comma-separated list of numbers, got {text!r}.') from None
    low, high = ALPHA_RANGE
    bad = [alpha for alpha in alphas if not low <= alpha <= high]
    if not alphas or bad:
        raise ValueError(f'--alpha: each alpha must lie in [{low:g}, {high:g}]; got {text!r}.')
    if len(set(alphas)) != len(alphas):
        raise ValueError(f'--alpha: an alpha is repeated in {text!r}.')
    return alphas


def find_inputs(path):
    """``[(file, name)]``: a file, or the images under a folder (recursive, sorted); ``name`` is the path relative
    to the folder without its extension."""
    if osp.isfile(path):
        return [(path, osp.splitext(osp.basename(path))[0])]
    if not osp.isdir(path):
        raise FileNotFoundError(f'-i: {path!r} is neither a file nor a folder.')
    found = []
    for root, _, files in os.walk(path):
        for file in files:
            if osp.splitext(file)[1].lower() in IMG_EXTENSIONS:
                full = osp.join(root, file)
                found.append((full, osp.splitext(osp.relpath(full, path))[0]))
    return sorted(found)


def png_with_text(png, key, text):
    """PNG bytes with a ``tEXt`` chunk (Latin-1 ``key`` and ``text``) inserted after the header chunk."""
    header_end = 8 + 8 + 13 + 4  # signature, IHDR length + type, its 13 data bytes, its CRC
    if png[:8] != b'\x89PNG\r\n\x1a\n' or png[12:16] != b'IHDR':
        raise ValueError('not a PNG stream')
    data = key.encode('latin-1') + b'\0' + text.encode('latin-1')
    chunk = len(data).to_bytes(4, 'big') + b'tEXt' + data + zlib.crc32(b'tEXt' + data).to_bytes(4, 'big')
    return png[:header_end] + chunk + png[header_end:]


def write_image(path, img, text=None):
    """Write ``img`` in the format of ``path``'s extension; PNGs get ``text`` as the package's text chunk."""
    extension = osp.splitext(path)[1].lower()
    ok, encoded = cv2.imencode(extension, img)
    if not ok:
        raise OSError(f'{path}: OpenCV could not encode a {extension} image of shape {img.shape}.')
    content = encoded.tobytes()
    if text is not None and extension == '.png':
        content = png_with_text(content, PNG_TEXT_KEY, text)
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'wb') as f:
        f.write(content)


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _alpha_suffix(alpha, alphas):
    return '' if len(alphas) == 1 else f'_a{alpha:g}'


def _contact_sheet(crop, restored, alphas, supports_alpha):
    """The input face, then its restoration at each alpha, each under a label."""
    size = crop.shape[0]
    label_height = max(14, size // 6)
    scale = max(0.3, size / 256)
    labels = ['input'] + [f'a={alpha:g}' if supports_alpha else f'a={alpha:g} (none)' for alpha in alphas]
    columns = [np.concatenate([label_tile(text, label_height, size, scale), face], 0)
               for text, face in zip(labels, [crop] + list(restored))]
    return np.concatenate(columns, 1)


def _build_parser():
    parser = argparse.ArgumentParser(
        prog='cqshift-restore', description='Restore the faces of photos with an exported CQShift, GFPGAN or PSFRGAN '
        'model (cqshift-export), at one or several restoration strengths (alpha).')
    parser.add_argument('-i', '--input', required=True, help='an image or a folder of images (recursive)')
    parser.add_argument('-o', '--output', required=True, help='output folder')
    parser.add_argument('--model', required=True, help='a cqshift-export model file')
    parser.add_argument('--alpha', default='1.0', help='restoration strength, or a comma-separated list (a contact '
                        f'sheet per face); each in [{ALPHA_RANGE[0]:g}, {ALPHA_RANGE[1]:g}]; default 1')
    parser.add_argument('--aligned', action='store_true', help='inputs are aligned faces (any size; resized to the '
                        "model's size and the restorations back to the input's)")
    parser.add_argument('--only-center-face', action='store_true', help='only the face nearest the centre')
    parser.add_argument('--detector', default='dlib-hog', choices=('dlib-hog', 'dlib-cnn', 'retinaface'),
                        help='face detector (default dlib-hog; dlib-cnn finds more poses, ~10x slower on CPU; '
                        'retinaface needs --detector-weights)')
    parser.add_argument('--detector-weights', default=None, help="dlib-cnn's mmod_human_face_detector.dat (default: "
                        "the installed copy) or RetinaFace's weights file (facexlib's detection_Resnet50_Final.pth)")
    parser.add_argument('--landmark-weights', default=None, help="dlib's shape_predictor_5_face_landmarks.dat "
                        '(default: the installed copy)')
    parser.add_argument('--detector-upsample', type=int, default=0, help='dlib: times the photo is doubled before '
                        'detecting (finds smaller faces, ~4x slower each)')
    parser.add_argument('--max-detect-size', type=int, default=2048, help='detect on a copy of at most this many '
                        'pixels on its longest side (faces are still restored at full resolution)')
    parser.add_argument('--parsing-weights', default=None, help='a ParseNet weights file: paste back with a parsing '
                        'mask (default: a soft square mask)')
    parser.add_argument('--parsing-opt', type=json.loads, default=None, help="JSON options of that ParseNet (e.g. the toy parser's "
                        '\'{"in_size": 32, "base_ch": 32, "res_depth": 2, "max_ch": 64}\')')
    parser.add_argument('--upscale', type=int, default=1, help='the restored photo is this many times the input')
    parser.add_argument('--ext', default='auto', choices=('auto', 'png', 'jpg', 'webp'),
                        help="restored photos' format (auto: the input's)")
    parser.add_argument('--skip-no-face', action='store_true', help='photos without a face are not copied')
    parser.add_argument('--identity-weights', default=None, help='an identity network (ArcFace; or dlib with '
                        '--identity-arch dlib, whose weights default to the installed copy): similarities in the '
                        'sidecar')
    parser.add_argument('--identity-arch', default=None, choices=IDENTITY_ARCHS, help='gfpgan (ResNetArcFace, '
                        'default), facexlib (IR-SE50) or dlib (its face-recognition ResNet)')
    parser.add_argument('--identity-arch-opt', type=json.loads, default=None, help='JSON ArcFace constructor options (the toy '
                        'ArcFace: \'{"layers": [1, 1, 1, 1]}\')')
    parser.add_argument('--identity-floor', type=float, default=None, help='lower alpha per face until the identity '
                        'similarity to the input is at least this (needs an identity network)')
    parser.add_argument('--identity-step', type=float, default=0.1, help="the guard's alpha step (default 0.1)")
    parser.add_argument('--precision', default='fp32', choices=sorted(PRECISIONS))
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--chunk-size', type=int, default=None, help='max faces per generator call')
    return parser


class _Run:
    """One ``cqshift-restore`` run: the restorer, the identity scorer and the counters of the closing summary."""

    def __init__(self, args):
        self.args = args
        self.alphas = parse_alphas(args.alpha)
        identity_arch = args.identity_arch or 'gfpgan'
        if args.identity_floor is not None and args.identity_weights is None and identity_arch != 'dlib':
            raise ValueError('--identity-floor needs an identity network: --identity-weights (or --identity-arch '
                             'dlib).')
        face_helper = None
        if not args.aligned:
            parse_net = None
            if args.parsing_weights is not None:
                from .archs.face_parsing import load_parsenet
                parse_net = load_parsenet(args.parsing_weights, option_name='--parsing-weights',
                                          **(args.parsing_opt or {}))
            face_helper = dict(detector=args.detector, detector_weights=args.detector_weights,
                               landmark_weights=args.landmark_weights, upsample=args.detector_upsample,
                               parse_net=parse_net, max_detect_size=args.max_detect_size)
        self.restorer = CQShiftRestorer(args.model, device=args.device, precision=args.precision,
                                        upscale=args.upscale, face_helper=face_helper)
        if not args.aligned:
            self.restorer.face_helper  # build the detector now: a missing file fails before any photo is read
        self.scorer = None
        if args.identity_weights is not None or args.identity_arch is not None:
            self.scorer = IdentityScorer(args.identity_weights, identity_arch,
                                         args.identity_arch_opt,
                                         device=str(self.restorer.device))
        self.guard = args.identity_floor is not None and self.restorer.supports_alpha
        self.model_sha256 = _file_sha256(args.model)
        self.images, self.faces, self.no_face, self.skipped, self.seconds = 0, 0, [], [], 0.0

    def _model_record(self):
        info = self.restorer.info
        return {'file': osp.abspath(self.args.model), 'sha256': self.model_sha256, 'method': self.restorer.method,
                'supports_alpha': self.restorer.supports_alpha, 'out_size': self.restorer.out_size,
                'version': info.get('version'), 'trained_on': info.get('trained_on'),
                'options_sha256': info.get('options_sha256')}

    def _text(self, alpha):
        return json.dumps({'version': __version__, 'model_sha256': self.model_sha256, 'method': self.restorer.method,
                           'alpha': alpha}, sort_keys=True)

    def restore_file(self, path, name):
        args = self.args
        with open(path, 'rb') as f:
            content = f.read()
        img, mode = decode_photo(content, path)
        start = time.perf_counter()
        alphas = alpha_grid(self.alphas, args.identity_step) if self.guard else self.alphas
        result = self.restorer.restore_photo(img, alphas, only_center_face=args.only_center_face,
                                             paste_back=False, has_aligned=args.aligned, chunk_size=args.chunk_size)
        records, chosen = [], []  # chosen[k][j]: face k's restoration for requested alpha j
        for index, face in enumerate(result.faces):
            record = {'index': index}
            if face.detection is not None:
                record.update(face.detection.to_dict())
                record['affine'] = [[round(float(v), 6) for v in row] for row in face.affine]
            record['shift'] = face.shift
            by_alpha = dict(zip(result.alphas, face.restored))
            similarity = {}
            if self.scorer is not None:
                similarity = dict(zip(result.alphas, self.scorer.similarities(face.crop, face.restored)))
                record['identity_by_alpha'] = {f'{alpha:g}': round(value, 4) for alpha, value in similarity.items()}
            per_alpha, faces_out = [], []
            for alpha in self.alphas:
                entry = {'requested': alpha}
                used = alpha
                if self.guard:
                    used, met = guard_alpha(alpha, similarity, args.identity_floor)
                    entry['floor_met'] = met
                    entry['lowered'] = used < alpha
                entry['used'] = used if self.restorer.supports_alpha else None
                if similarity:
                    entry['identity'] = round(similarity[used], 4)
                per_alpha.append(entry)
                faces_out.append(by_alpha[used])
            record['alphas'] = per_alpha
            records.append(record)
            chosen.append(faces_out)
        photos = []
        if result.faces and not args.aligned:
            affines = [face.affine for face in result.faces]
            photos = [self.restorer.face_helper.paste_back(img, [faces[j] for faces in chosen], affines)
                      for j in range(len(self.alphas))]
        elif args.aligned:  # the restored face at the input's size (times upscale)
            size = (img.shape[0] * args.upscale, img.shape[1] * args.upscale)
            photos = [resize_face(restored, size) for restored in chosen[0]]
        self.seconds += time.perf_counter() - start
        self.images += 1
        self.faces += len(result.faces)
        self._write(path, name, img, mode, result, chosen, records, photos)

    def _write(self, path, name, img, mode, result, chosen, records, photos):
        args, out = self.args, self.args.output
        extension = osp.splitext(path)[1].lower() if args.ext == 'auto' else '.' + args.ext
        extension = '.jpg' if extension == '.jpeg' else extension
        outputs = {'restored_imgs': [], 'cropped_faces': [], 'restored_faces': [], 'cmp': []}
        for index, (face, faces_out) in enumerate(zip(result.faces, chosen)):
            stem = f'{name}_{index:02d}'
            crop_path = osp.join(out, 'cropped_faces', stem + '.png')
            write_image(crop_path, face.crop)
            outputs['cropped_faces'].append(crop_path)
            for alpha, restored in zip(self.alphas, faces_out):
                face_path = osp.join(out, 'restored_faces', stem + _alpha_suffix(alpha, self.alphas) + '.png')
                write_image(face_path, restored, self._text(alpha))
                outputs['restored_faces'].append(face_path)
            cmp_path = osp.join(out, 'cmp', stem + '.png')
            write_image(cmp_path, _contact_sheet(face.crop, faces_out, self.alphas, self.restorer.supports_alpha))
            outputs['cmp'].append(cmp_path)
        if not result.faces:
            self.no_face.append(path)
            if not args.skip_no_face:
                copy_path = osp.join(out, 'restored_imgs', name + osp.splitext(path)[1].lower())
                os.makedirs(osp.dirname(copy_path), exist_ok=True)
                with open(path, 'rb') as src, open(copy_path, 'wb') as dst:
                    dst.write(src.read())
                outputs['restored_imgs'].append(copy_path)
        for alpha, photo in zip(self.alphas, photos):
            photo_path = osp.join(out, 'restored_imgs', name + _alpha_suffix(alpha, self.alphas) + extension)
            write_image(photo_path, restore_photo_mode(photo, mode, extension), self._text(alpha))
            outputs['restored_imgs'].append(photo_path)
        sidecar = {
            'input': osp.abspath(path), 'size': list(img.shape[:2]),
            'mode': {'channels': mode.channels, 'bit_depth': mode.bit_depth, 'alpha_plane': mode.alpha is not None},
            'aligned': args.aligned, 'model': self._model_record(), 'alphas': self.alphas,
            'identity': None if self.scorer is None else {
                'arch': self.scorer.arch, 'weights': args.identity_weights, 'floor': args.identity_floor,
                'step': args.identity_step if self.guard else None},
            'faces': records, 'outputs': outputs,
        }
        sidecar_path = osp.join(out, 'restored_imgs', name + '.faces.json')
        os.makedirs(osp.dirname(sidecar_path), exist_ok=True)
        with open(sidecar_path, 'w') as f:
            json.dump(sidecar, f, indent=1)

    def summary(self):
        per_face = f'{1000 * self.seconds / self.faces:.1f} ms per face' if self.faces else 'no faces'
        lines = [f'{self.images} image(s) restored, {self.faces} face(s) found ({per_face}, detection and '
                 f'restoration at {len(self.alphas)} alpha(s)), {len(self.no_face)} without a face'
                 + (' (skipped)' if self.args.skip_no_face else ' (copied unchanged)') + f', {len(self.skipped)} '
                 f'skipped. Results in {self.args.output}']
        lines += [f'  no face: {path}' for path in self.no_face]
        lines += [f'  skipped: {reason}' for reason in self.skipped]
        return '\n'.join(lines)


def main(argv=None):
    args = _build_parser().parse_args(argv)
    try:
        inputs = find_inputs(args.input)
        run = _Run(args)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError, NotImplementedError) as error:
        print(f'cqshift-restore: error: {error}', file=sys.stderr)
        return 2
    if not inputs:
        print(f'cqshift-restore: error: no images ({", ".join(IMG_EXTENSIONS)}) under {args.input!r}.',
              file=sys.stderr)
        return 2
    for folder in OUTPUT_FOLDERS:
        os.makedirs(osp.join(args.output, folder), exist_ok=True)
    with torch.inference_mode():
        for path, name in tqdm(inputs, desc='cqshift-restore', unit='image', disable=None):
            try:
                run.restore_file(path, name)
            except (BadImageError, OSError) as error:
                run.skipped.append(str(error) if path in str(error) else f'{path}: {error}')
    print(run.summary())
    return 1 if run.skipped else 0


if __name__ == '__main__':
    sys.exit(main())
