"""Convert a StyleGAN2 checkpoint (rosinality stylegan2-pytorch, or basicsr's fused-op layout) to the clean layout.

    cqshift-convert-stylegan2 --input 550000.pt --output stylegan2_ffhq_256_clean.pth \
        [--output-d stylegan2_ffhq_256_d.pth] [--size 256 --channel-multiplier 2 --num-style-feat 512 \
        --num-mlp 8 --narrow 1] [--trust-checkpoint]

The generator is saved as ``{'params_ema': state_dict}`` for gfpgan's ``StyleGAN2GeneratorClean`` (plus
``latent_avg`` when the input has one); with ``--output-d`` and a discriminator in the input (rosinality ``d``),
it is saved as ``{'params': state_dict}`` for ``StyleGAN2DiscriminatorClean``. Both are loaded back into
freshly built networks before saving, so a wrong ``--size``/``--channel-multiplier`` fails here, not later.

Trust: the input is loaded weights-only (tensors, containers, numbers and rosinality's ``argparse.Namespace``); a
file holding any other object is refused before any of it runs. ``--trust-checkpoint`` alone allows full
unpickling, which runs whatever code the file carries: use it only for a file from a source you trust. The outputs
hold tensors only, so they load weights-only everywhere else; they are written atomically (temporary file + rename).
"""
import argparse

from gfpgan.archs.stylegan2_clean_arch import StyleGAN2GeneratorClean

from cqshift_basicsr.archs.stylegan2_clean_d_arch import StyleGAN2DiscriminatorClean
from cqshift_basicsr.archs.stylegan2_weights import (ARCH_HINT, convert_discriminator_state_dict,
                                                     convert_generator_state_dict, extract_generator_state_dict,
                                                     load_checkpoint_file)
from cqshift_basicsr.checkpoints import atomic_save, load_state_dict_checked

__all__ = ['convert_stylegan2', 'main']


def convert_stylegan2(input_path, output_path, output_d_path=None, size=256, channel_multiplier=2,
                      num_style_feat=512, num_mlp=8, narrow=1.0, lr_mlp=0.01, param_key='params_ema',
                      trust_checkpoint=False):
    """Convert and save; returns ``{'layout': ..., 'discriminator': bool}``. ``trust_checkpoint`` (the
    ``--trust-checkpoint`` flag) allows full unpickling of the input, which can run code it carries."""
    ckpt = load_checkpoint_file(input_path, option='--input', trust=trust_checkpoint)
    g_sd, latent_avg = extract_generator_state_dict(ckpt, param_key)
    g_sd, layout = convert_generator_state_dict(g_sd, lr_mlp=lr_mlp)
    generator = StyleGAN2GeneratorClean(size, num_style_feat=num_style_feat, num_mlp=num_mlp,
                                        channel_multiplier=channel_multiplier, narrow=narrow)
    load_state_dict_checked(generator, g_sd, input_path, '--input', hint=f'{layout} layout; {ARCH_HINT}')
    out = {'params_ema': generator.state_dict()}
    if latent_avg is not None:
        out['latent_avg'] = latent_avg.detach().reshape(-1).clone()
    atomic_save(out, output_path)

    has_d = isinstance(ckpt, dict) and 'd' in ckpt
    if output_d_path:
        if not has_d:
            raise KeyError(f'--output-d given but {input_path!r} holds no discriminator (no "d" entry)')
        disc = StyleGAN2DiscriminatorClean(size, channel_multiplier=channel_multiplier, narrow=narrow)
        load_state_dict_checked(disc, convert_discriminator_state_dict(ckpt['d']), input_path, '--input',
                                hint=ARCH_HINT)
        atomic_save({'params': disc.state_dict()}, output_d_path)
    return {'layout': layout, 'discriminator': bool(output_d_path and has_d)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--input', required=True, help='rosinality .pt or basicsr StyleGAN2 .pth')
    parser.add_argument('--output', required=True, help='clean generator file ({"params_ema": ...})')
    parser.add_argument('--output-d', default=None, help='optional discriminator file ({"params": ...})')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--channel-multiplier', type=int, default=2)
    parser.add_argument('--num-style-feat', type=int, default=512)
    parser.add_argument('--num-mlp', type=int, default=8)
    parser.add_argument('--narrow', type=float, default=1.0)
    parser.add_argument('--lr-mlp', type=float, default=0.01, help="mapping net's lr multiplier (StyleGAN2: 0.01)")
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='allow full unpickling of --input (not weights-only). Unpickling runs any '
                        'code the file carries: only for a file from a source you trust. Without it, a file holding '
                        'objects other than tensors (and rosinality\'s argparse.Namespace) is refused.')
    args = parser.parse_args(argv)
    info = convert_stylegan2(args.input, args.output, args.output_d, args.size, args.channel_multiplier,
                             args.num_style_feat, args.num_mlp, args.narrow, args.lr_mlp,
                             trust_checkpoint=args.trust_checkpoint)
    print(f'Converted {info["layout"]} generator -> {args.output}' +
          (f'; discriminator -> {args.output_d}' if info['discriminator'] else ''))
    return 0


if __name__ == '__main__':
    main()
