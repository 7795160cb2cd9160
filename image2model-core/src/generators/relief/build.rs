//! Grid → closed mesh: pinch removal, top surface, walls and a flat base.

use super::raster::Grid;
use crate::gltf::Mesh;

/// The physical shape of the relief, in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shape {
    /// The longer side of the footprint.
    pub(crate) size: f32,
    /// The base's thickness (the height of a black pixel).
    pub(crate) base: f32,
    /// How much higher a white pixel stands than a black one.
    pub(crate) depth: f32,
}

/// The initial grid for a `w × h` image under `limit` triangles, assuming an
/// opaque image: about `2·gw·gh` on top, `4·(gw + gh)` in the walls and
/// `2·(gw + gh)` in the base (plus slack). Cells stay close to square, at most
/// one per pixel.
pub(crate) fn initial_grid(w: u32, h: u32, limit: u32) -> (usize, usize) {
    let (wf, hf, l) = (f64::from(w), f64::from(h), f64::from(limit));
    let a = 2.0 * wf * hf;
    let b = 8.0 * (wf + hf);
    let s = (-b + (b * b + 4.0 * a * l).sqrt()) / (2.0 * a);
    let mut gw = ((s * wf).floor() as usize).clamp(1, w as usize);
    let mut gh = ((s * hf).floor() as usize).clamp(1, h as usize);
    while 2 * gw * gh + 8 * (gw + gh) > limit as usize && (gw > 1 || gh > 1) {
        // Shrink the side with more cells per pixel, keeping cells square-ish.
        if gh == 1 || (gw > 1 && gw * h as usize >= gh * w as usize) {
            gw -= 1;
        } else {
            gh -= 1;
        }
    }
    (gw, gh)
}

/// A smaller grid for a retry after `faces` exceeded `limit`.
pub(crate) fn shrink(gw: usize, gh: usize, faces: usize, limit: u32) -> (usize, usize) {
    let f = (f64::from(limit) / faces as f64).sqrt() * 0.95;
    let mut ngw = ((gw as f64 * f) as usize).clamp(1, gw);
    let mut ngh = ((gh as f64 * f) as usize).clamp(1, gh);
    if (ngw, ngh) == (gw, gh) {
        if gw >= gh && gw > 1 {
            ngw -= 1;
        } else if gh > 1 {
            ngh -= 1;
        }
    }
    (ngw, ngh)
}

/// Makes the inside set free of pinches: two inside cells touching only at a
/// corner (with both other cells of that 2×2 block outside) would make the
/// corner's wall edge shared by four triangles. Filling one of the two
/// outside cells (the upper one) joins them. Each fill adds a cell, so this
/// ends, in time linear in the grid. A filled cell takes the mean luma and
/// colour of its inside neighbours.
pub(crate) fn remove_pinches(grid: &mut Grid) {
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for j in 1..grid.gh {
        for i in 1..grid.gw {
            stack.push((i, j));
            while let Some((ci, cj)) = stack.pop() {
                let Some((fi, fj)) = pinch_fix(grid, ci, cj) else {
                    continue;
                };
                fill(grid, fi, fj);
                // Re-check the interior corners of the filled cell.
                for (di, dj) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let (x, y) = (fi + di, fj + dj);
                    if (1..grid.gw).contains(&x) && (1..grid.gh).contains(&y) {
                        stack.push((x, y));
                    }
                }
            }
        }
    }
}

/// The cell to fill to undo a pinch at interior corner `(i, j)`, if any.
fn pinch_fix(grid: &Grid, i: usize, j: usize) -> Option<(usize, usize)> {
    let (i, j) = (i as isize, j as isize);
    let tl = grid.is_inside(i - 1, j - 1);
    let tr = grid.is_inside(i, j - 1);
    let bl = grid.is_inside(i - 1, j);
    let br = grid.is_inside(i, j);
    match (tl, tr, bl, br) {
        (true, false, false, true) => Some((i as usize, j as usize - 1)),
        (false, true, true, false) => Some((i as usize - 1, j as usize - 1)),
        _ => None,
    }
}

fn fill(grid: &mut Grid, i: usize, j: usize) {
    let (ii, jj) = (i as isize, j as isize);
    let (mut n, mut luma, mut rgb) = (0u32, 0.0f32, [0u32; 3]);
    for (di, dj) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
        if grid.is_inside(ii + di, jj + dj) {
            let k = grid.idx((ii + di) as usize, (jj + dj) as usize);
            n += 1;
            luma += grid.luma[k];
            for (acc, c) in rgb.iter_mut().zip(grid.color[k]) {
                *acc += u32::from(c);
            }
        }
    }
    let k = grid.idx(i, j);
    grid.inside[k] = true;
    if n > 0 {
        grid.luma[k] = luma / n as f32;
        grid.color[k] = rgb.map(|c| ((c + n / 2) / n) as u8);
    }
}

const NONE: u32 = u32::MAX;

/// Builds the closed relief (see the module doc of `relief`). The grid must be
/// free of pinches ([`remove_pinches`]) and have an inside cell.
///
/// `image` is the image's `(width, height)`: the footprint has its aspect
/// ratio exactly, with the longer side `shape.size`.
pub(crate) fn build(grid: &Grid, shape: Shape, image: (u32, u32), colors: bool) -> Mesh {
    let (gw, gh) = (grid.gw, grid.gh);
    let cw = gw + 1; // corners per row
    let corner = |i: usize, j: usize| j * cw + i;
    // Inside cells around corner (i, j), as signed cell coordinates.
    let around = |i: usize, j: usize| {
        let (i, j) = (i as isize, j as isize);
        [(i - 1, j - 1), (i, j - 1), (i - 1, j), (i, j)]
    };

    let longer = image.0.max(image.1) as f32;
    let width = shape.size * image.0 as f32 / longer;
    let depth_z = shape.size * image.1 as f32 / longer;
    let (dx, dz) = (width / gw as f32, depth_z / gh as f32);
    let (x0, z0) = (-width / 2.0, -depth_z / 2.0);

    let mut mesh = Mesh {
        colors: colors.then(Vec::new),
        ..Mesh::default()
    };
    let mut top = vec![NONE; cw * (gh + 1)];
    let mut bottom = vec![NONE; cw * (gh + 1)];

    // Vertices: a top vertex per corner touching an inside cell; a bottom
    // vertex per boundary corner (touching inside and outside cells).
    for j in 0..=gh {
        for i in 0..=gw {
            let (mut n, mut luma, mut rgb) = (0u32, 0.0f32, [0u32; 3]);
            for (ci, cj) in around(i, j) {
                if grid.is_inside(ci, cj) {
                    let k = grid.idx(ci as usize, cj as usize);
                    n += 1;
                    luma += grid.luma[k];
                    for (acc, c) in rgb.iter_mut().zip(grid.color[k]) {
                        *acc += u32::from(c);
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let (x, z) = (x0 + i as f32 * dx, z0 + j as f32 * dz);
            let y = shape.base + shape.depth * (luma / n as f32);
            let color = rgb.map(|c| ((c + n / 2) / n) as u8);
            let mut push = |p: [f32; 3]| {
                mesh.positions.push(p);
                if let Some(c) = &mut mesh.colors {
                    c.push([color[0], color[1], color[2], 255]);
                }
                (mesh.positions.len() - 1) as u32
            };
            top[corner(i, j)] = push([x, y, z]);
            if n < 4 {
                bottom[corner(i, j)] = push([x, 0.0, z]);
            }
        }
    }

    let idx = &mut mesh.indices;
    for j in 0..gh {
        for i in 0..gw {
            if !grid.inside[grid.idx(i, j)] {
                continue;
            }
            let a = corner(i, j);
            let b = corner(i + 1, j);
            let c = corner(i + 1, j + 1);
            let d = corner(i, j + 1);
            // Top, facing +Y: its boundary runs a → d → c → b → a.
            idx.extend([top[a], top[d], top[c], top[a], top[c], top[b]]);
            // Walls along edges whose other side is outside. For a top edge
            // u → v the wall holds v → u on top and u → v on the bottom.
            let (ii, jj) = (i as isize, j as isize);
            for (u, v, ni, nj) in [
                (a, d, ii - 1, jj),
                (d, c, ii, jj + 1),
                (c, b, ii + 1, jj),
                (b, a, ii, jj - 1),
            ] {
                if !grid.is_inside(ni, nj) {
                    idx.extend([bottom[v], top[v], top[u], bottom[v], top[u], bottom[u]]);
                }
            }
        }
    }

    // Base, facing -Y: each run of inside cells in a row is a strip between
    // the boundary corners on its upper and lower lines (only those: the
    // base is flat and needs no interior vertices), zipped into triangles.
    let mut upper = Vec::new();
    let mut lower = Vec::new();
    for j in 0..gh {
        let mut i = 0;
        while i < gw {
            if !grid.inside[grid.idx(i, j)] {
                i += 1;
                continue;
            }
            let start = i;
            while i < gw && grid.inside[grid.idx(i, j)] {
                i += 1;
            }
            upper.clear();
            lower.clear();
            for x in start..=i {
                if bottom[corner(x, j)] != NONE {
                    upper.push(bottom[corner(x, j)]);
                }
                if bottom[corner(x, j + 1)] != NONE {
                    lower.push(bottom[corner(x, j + 1)]);
                }
            }
            zip_strip(&upper, &lower, &mesh.positions, idx);
        }
    }
    mesh
}

/// Triangulates the strip between two runs of collinear base vertices with
/// equal first and last x, facing -Y.
fn zip_strip(upper: &[u32], lower: &[u32], positions: &[[f32; 3]], out: &mut Vec<u32>) {
    let x = |v: u32| positions[v as usize][0];
    let (mut t, mut b) = (0, 0);
    while t + 1 < upper.len() || b + 1 < lower.len() {
        if t + 1 < upper.len() && (b + 1 == lower.len() || x(upper[t + 1]) <= x(lower[b + 1])) {
            out.extend([upper[t], upper[t + 1], lower[b]]);
            t += 1;
        } else {
            out.extend([upper[t], lower[b + 1], lower[b]]);
            b += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(gw: usize, gh: usize, inside: &[u8]) -> Grid {
        Grid {
            gw,
            gh,
            inside: inside.iter().map(|&b| b == 1).collect(),
            luma: (0..gw * gh).map(|k| k as f32 / (gw * gh) as f32).collect(),
            color: vec![[1, 2, 3]; gw * gh],
        }
    }

    const SHAPE: Shape = Shape {
        size: 1.0,
        base: 0.1,
        depth: 0.5,
    };

    #[test]
    fn initial_grid_fits_the_budget_and_the_aspect() {
        for (w, h, limit) in [
            (4000u32, 3000u32, 20_000u32),
            (1, 20_000, 500),
            (64, 64, 1_000_000),
            (7, 3000, 500),
        ] {
            let (gw, gh) = initial_grid(w, h, limit);
            assert!(2 * gw * gh + 8 * (gw + gh) <= limit as usize, "{w}×{h}");
            assert!(gw <= w as usize && gh <= h as usize && gw >= 1 && gh >= 1);
        }
        let (gw, gh) = initial_grid(4000, 3000, 20_000);
        assert!(
            (gw as f64 / gh as f64 - 4.0 / 3.0).abs() < 0.02,
            "{gw}×{gh}"
        );
        assert_eq!(initial_grid(64, 64, 1_000_000), (64, 64));
    }

    #[test]
    fn shrink_always_makes_progress() {
        assert_eq!(shrink(1, 1, 12, 500), (1, 1));
        let (gw, gh) = shrink(10, 10, 501, 500);
        assert!(gw * gh < 100);
        assert_eq!(shrink(2, 1, 600, 500), (1, 1));
    }

    #[test]
    fn pinches_are_filled_and_others_left_alone() {
        // 1 0 / 0 1: a pinch; the upper outside cell is filled.
        let mut g = grid(2, 2, &[1, 0, 0, 1]);
        remove_pinches(&mut g);
        assert_eq!(g.inside, vec![true, true, false, true]);
        assert_eq!(g.color[1], [1, 2, 3]);

        let mut g = grid(3, 1, &[1, 0, 1]);
        remove_pinches(&mut g);
        assert_eq!(g.inside, vec![true, false, true]);
    }

    #[test]
    fn a_full_rectangle_has_a_light_base() {
        let (gw, gh) = (10, 6);
        let g = grid(gw, gh, &vec![1; gw * gh]);

        let mesh = build(&g, SHAPE, (10, 6), true);

        let top = 2 * gw * gh;
        let walls = 2 * 2 * (gw + gh);
        let base = mesh.triangle_count() - top - walls;
        // One strip per row: its two long sides only have vertices on the
        // outer rows.
        assert_eq!(base, 2 * gw + 2 * (gh - 1) - 2 + 2);
        assert_eq!(mesh.colors.as_ref().unwrap().len(), mesh.positions.len());
        let (lo, hi) = mesh.bounds().unwrap();
        assert_eq!((lo[1], hi[0] - lo[0]), (0.0, 1.0));
    }
}
